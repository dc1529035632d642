// Package storetest is the conformance suite for connection.Store and
// connection.PendingStore: one set of tests that every implementation
// (tablestore on Azurite, memstore in memory) must pass, so the fake used by
// service tests cannot drift from the real store.
//
// It owns no implementation; it only drives the interfaces, plus
// tablestore's exported validation sentinels.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// Factory returns new, empty stores for one test (they may be one value).
// It registers its own clean-up with t.
type Factory func(t *testing.T) (connection.Store, connection.PendingStore)

// Run runs the whole suite, each test on fresh stores from newStores.
func Run(t *testing.T, newStores Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, connection.Store, connection.PendingStore)
	}{
		{"CreateGet", testCreateGet},
		{"PeekHasNoTokens", testPeekHasNoTokens},
		{"CreateExistingConflicts", testCreateExistingConflicts},
		{"CreateRace", testCreateRace},
		{"Update", testUpdate},
		{"UpdateReplacesEverything", testUpdateReplacesEverything},
		{"StaleUpdateConflicts", testStaleUpdateConflicts},
		{"UpdateMissing", testUpdateMissing},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdatesLoseNothing},
		{"Delete", testDelete},
		{"TokensRoundTrip", testTokensRoundTrip},
		{"EdgeUserIDs", testEdgeUserIDs},
		{"InvalidUserIDs", testInvalidUserIDs},
		{"ListEmpty", testListEmpty},
		{"ListExactlyOnce", testListExactlyOnce},
		{"ListExactlyOnceUnderWrites", testListExactlyOnceUnderWrites},
		{"ListETagUpdates", testListETagUpdates},
		{"ThrottledUntil", testThrottledUntil},
		{"ListBadCursor", testListBadCursor},
		{"ListInvalidQuery", testListInvalidQuery},
		{"PendingRoundTrip", testPendingRoundTrip},
		{"PendingInvalid", testPendingInvalid},
		{"MarkUsed", testMarkUsed},
		{"MarkUsedRace", testMarkUsedRace},
		{"DeleteExpired", testDeleteExpired},
		{"PendingConnectRoundTrip", testPendingConnectRoundTrip},
		{"DeletePending", testDeletePending},
		{"DeletePendingRace", testDeletePendingRace},
	}
	tests = append(tests, outboxTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, p := newStores(t)
			tt.fn(t, s, p)
		})
	}
}

// base has 100 ns precision, as Table Storage keeps; finer fractions
// are not promised by the stores.
var base = time.Date(2026, 11, 25, 23, 40, 0, 123456700, time.UTC)

// sample is a connection with every field set.
func sample(userID string) connection.Connection {
	cet := time.FixedZone("CET", 3600) // stores may return UTC: compared with Equal
	return connection.Connection{
		UserID: userID,
		Status: connection.StatusConnected,
		Account: connection.Account{
			ID:          fmt.Sprintf("00000000-0000-0000-0000-%012d", len(userID)),
			TenantID:    "9188040d-6c67-4c5b-b112-36a304b66dad",
			Email:       "ada@contoso.com",
			DisplayName: "Ada Lovelace 'Countess' \"of\" Lovelace",
		},
		Scopes:               []string{"User.Read", "Files.ReadWrite.All", "offline_access"},
		AccessToken:          "at-" + userID + "-eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.payload.signature",
		RefreshToken:         "rt-" + userID + "-0.AAAA-refresh|token'with\"quotes",
		AccessTokenExpiresAt: base.Add(time.Hour).In(cet),
		ConnectedAt:          base.Add(-24 * time.Hour),
		LastRefreshedAt:      base.Add(-time.Minute),
		LastUsedAt:           base.Add(-30 * time.Second),
		ThrottledUntil:       base.Add(45 * time.Second),
		LastError:            &connection.LastError{Code: "temporarily_unavailable", At: base.Add(-2 * time.Minute)},
	}
}

// diff lists how got differs from want, ETags aside.
func diff(got, want connection.Connection) []string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s: got %#v, want %#v", field, g, w)) }
	if got.UserID != want.UserID {
		add("UserID", got.UserID, want.UserID)
	}
	if got.Status != want.Status {
		add("Status", got.Status, want.Status)
	}
	if got.Account != want.Account {
		add("Account", got.Account, want.Account)
	}
	if !slices.Equal(got.Scopes, want.Scopes) {
		add("Scopes", got.Scopes, want.Scopes)
	}
	if got.AccessToken != want.AccessToken {
		add("AccessToken", got.AccessToken, want.AccessToken)
	}
	if got.RefreshToken != want.RefreshToken {
		add("RefreshToken", got.RefreshToken, want.RefreshToken)
	}
	for _, f := range []struct {
		name string
		g, w time.Time
	}{
		{"AccessTokenExpiresAt", got.AccessTokenExpiresAt, want.AccessTokenExpiresAt},
		{"ConnectedAt", got.ConnectedAt, want.ConnectedAt},
		{"LastRefreshedAt", got.LastRefreshedAt, want.LastRefreshedAt},
		{"LastUsedAt", got.LastUsedAt, want.LastUsedAt},
		{"ThrottledUntil", got.ThrottledUntil, want.ThrottledUntil},
	} {
		if !f.g.Equal(f.w) {
			add(f.name, f.g.Format(time.RFC3339Nano), f.w.Format(time.RFC3339Nano))
		}
	}
	switch {
	case (got.LastError == nil) != (want.LastError == nil):
		add("LastError", got.LastError, want.LastError)
	case got.LastError != nil && (got.LastError.Code != want.LastError.Code || !got.LastError.At.Equal(want.LastError.At)):
		add("LastError", *got.LastError, *want.LastError)
	}
	return d
}

func assertConnection(t *testing.T, what string, got, want connection.Connection) {
	t.Helper()
	if d := diff(got, want); len(d) > 0 {
		t.Errorf("%s differs:\n  %s", what, strings.Join(d, "\n  "))
	}
}

func withoutTokens(c connection.Connection) connection.Connection {
	c.AccessToken, c.RefreshToken = "", ""
	return c
}

func mustCreate(t *testing.T, s connection.Store, c connection.Connection) connection.Connection {
	t.Helper()
	got, err := s.Create(t.Context(), c)
	if err != nil {
		t.Fatalf("Create(%q): %v", c.UserID, err)
	}
	if got.ETag == "" {
		t.Fatalf("Create(%q) returned no ETag", c.UserID)
	}
	return got
}

func mustGet(t *testing.T, s connection.Store, userID string) connection.Connection {
	t.Helper()
	got, err := s.Get(t.Context(), userID)
	if err != nil {
		t.Fatalf("Get(%q): %v", userID, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

func testPeekHasNoTokens(t *testing.T, s connection.Store, _ connection.PendingStore) {
	want := sample("peek")
	created := mustCreate(t, s, want)
	got, err := s.Peek(t.Context(), "peek")
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != "" || got.RefreshToken != "" {
		t.Errorf("Peek returned tokens: %v", got)
	}
	if got.ETag != created.ETag || got.Status != want.Status || got.Account != want.Account || !got.AccessTokenExpiresAt.Equal(want.AccessTokenExpiresAt) {
		t.Errorf("Peek = %v, want the status fields of %v", got, want)
	}
	_, err = s.Peek(t.Context(), "nobody")
	wantErr(t, "Peek of a user never connected", err, connection.ErrNotFound)
}

func testCreateGet(t *testing.T, s connection.Store, _ connection.PendingStore) {
	want := sample("42")
	created := mustCreate(t, s, want)
	assertConnection(t, "Create's result", created, want)
	got := mustGet(t, s, "42")
	assertConnection(t, "Get after Create", got, want)
	if got.ETag != created.ETag {
		t.Errorf("Get ETag = %q, Create returned %q", got.ETag, created.ETag)
	}

	_, err := s.Get(t.Context(), "43")
	wantErr(t, "Get of a user never connected", err, connection.ErrNotFound)

	// A zero ConnectedAt is stamped by the store.
	bare := sample("44")
	bare.ConnectedAt = time.Time{}
	mustCreate(t, s, bare)
	if got := mustGet(t, s, "44"); got.ConnectedAt.IsZero() {
		t.Error("Create with zero ConnectedAt stored no ConnectedAt")
	}

	// Optional fields absent round-trip as absent.
	minimal := connection.Connection{UserID: "45", Status: connection.StatusReconnectRequired}
	mustCreate(t, s, minimal)
	got = mustGet(t, s, "45")
	minimal.ConnectedAt = got.ConnectedAt // stamped
	assertConnection(t, "minimal connection", got, minimal)
	if got.Scopes != nil || got.LastError != nil {
		t.Errorf("minimal connection: Scopes %#v, LastError %#v; want nil, nil", got.Scopes, got.LastError)
	}
}

func testCreateExistingConflicts(t *testing.T, s connection.Store, _ connection.PendingStore) {
	first := mustCreate(t, s, sample("u1"))
	second := sample("u1")
	second.AccessToken, second.RefreshToken = "other-at", "other-rt"
	_, err := s.Create(t.Context(), second)
	wantErr(t, "second Create", err, connection.ErrConflict)
	got := mustGet(t, s, "u1")
	assertConnection(t, "after the conflicting Create", got, sample("u1"))
	if got.ETag != first.ETag {
		t.Errorf("ETag changed by a failed Create: %q -> %q", first.ETag, got.ETag)
	}
}

func testCreateRace(t *testing.T, s connection.Store, _ connection.PendingStore) {
	const n = 10
	errs := race(n, func(i int) error {
		c := sample("racer")
		c.AccessToken = fmt.Sprintf("at-%d", i)
		_, err := s.Create(context.Background(), c)
		return err
	})
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, connection.ErrConflict):
			t.Errorf("racing Create: %v, want nil or ErrConflict", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d of %d racing Creates succeeded, want exactly 1", wins, n)
	}
}

func testUpdate(t *testing.T, s connection.Store, _ connection.PendingStore) {
	created := mustCreate(t, s, sample("u1"))
	next := created
	next.Status = connection.StatusReconnectRequired
	next.AccessToken, next.RefreshToken = "at-2", "rt-2"
	next.Scopes = []string{"User.Read"}
	next.Account.Email = "ada@fabrikam.com"
	next.AccessTokenExpiresAt = base.Add(2 * time.Hour)
	next.LastRefreshedAt = base
	next.LastError = &connection.LastError{Code: "invalid_grant", At: base}
	updated, err := s.Update(t.Context(), next)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.ETag == "" || updated.ETag == created.ETag {
		t.Errorf("Update ETag = %q, want a new one (was %q)", updated.ETag, created.ETag)
	}
	assertConnection(t, "Update's result", updated, next)
	got := mustGet(t, s, "u1")
	assertConnection(t, "Get after Update", got, next)
	if got.ETag != updated.ETag {
		t.Errorf("Get ETag = %q, Update returned %q", got.ETag, updated.ETag)
	}
	// The returned ETag is good for the next update.
	next = updated
	next.Status = connection.StatusConnected
	next.LastError = nil
	if _, err := s.Update(t.Context(), next); err != nil {
		t.Fatalf("Update with the ETag Update returned: %v", err)
	}
	assertConnection(t, "Get after the second Update", mustGet(t, s, "u1"), next)
}

func testUpdateReplacesEverything(t *testing.T, s connection.Store, _ connection.PendingStore) {
	created := mustCreate(t, s, sample("u1"))
	// Update replaces the row: what the new value leaves empty is gone.
	cleared := connection.Connection{UserID: "u1", Status: connection.StatusReconnectRequired, ConnectedAt: created.ConnectedAt, ETag: created.ETag}
	if _, err := s.Update(t.Context(), cleared); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got := mustGet(t, s, "u1")
	assertConnection(t, "after clearing Update", got, cleared)
	if got.Scopes != nil || got.LastError != nil {
		t.Errorf("cleared fields came back: Scopes %#v, LastError %#v", got.Scopes, got.LastError)
	}
}

func testStaleUpdateConflicts(t *testing.T, s connection.Store, _ connection.PendingStore) {
	created := mustCreate(t, s, sample("u1"))
	a := created
	a.RefreshToken = "rt-from-instance-a"
	ua, err := s.Update(t.Context(), a)
	if err != nil {
		t.Fatalf("first Update: %v", err)
	}
	b := created // read before a's update: stale
	b.RefreshToken = "rt-from-instance-b"
	_, err = s.Update(t.Context(), b)
	wantErr(t, "Update with a stale ETag", err, connection.ErrConflict)
	got := mustGet(t, s, "u1")
	assertConnection(t, "after the stale Update", got, a)
	if got.ETag != ua.ETag {
		t.Errorf("ETag changed by a failed Update: %q -> %q", ua.ETag, got.ETag)
	}

	noETag := got
	noETag.ETag = ""
	noETag.RefreshToken = "rt-unconditional"
	_, err = s.Update(t.Context(), noETag)
	wantErr(t, "Update without an ETag", err, connection.ErrConflict)
	assertConnection(t, "after the Update without ETag", mustGet(t, s, "u1"), a)

	// Deleted and created again: an ETag from before must not match.
	if err := s.Delete(t.Context(), "u1"); err != nil {
		t.Fatal(err)
	}
	recreated := mustCreate(t, s, sample("u1"))
	if recreated.ETag == ua.ETag {
		t.Errorf("recreated row reuses the old ETag %q", ua.ETag)
	}
	old := ua
	old.RefreshToken = "rt-from-before-the-delete"
	_, err = s.Update(t.Context(), old)
	wantErr(t, "Update with an ETag from before delete+create", err, connection.ErrConflict)
	assertConnection(t, "after the Update with an old ETag", mustGet(t, s, "u1"), sample("u1"))
}

func testUpdateMissing(t *testing.T, s connection.Store, _ connection.PendingStore) {
	other := mustCreate(t, s, sample("present"))
	ghost := sample("ghost")
	ghost.ETag = other.ETag // any well-formed ETag
	_, err := s.Update(t.Context(), ghost)
	wantErr(t, "Update of a missing connection", err, connection.ErrNotFound)
	_, err = s.Get(t.Context(), "ghost")
	wantErr(t, "Get after updating a missing connection", err, connection.ErrNotFound)
}

func testConcurrentUpdatesLoseNothing(t *testing.T, s connection.Store, _ connection.PendingStore) {
	c := sample("counter")
	c.Account.DisplayName = "0"
	mustCreate(t, s, c)
	const workers, each = 8, 4
	errs := race(workers, func(int) error {
		ctx := context.Background()
		for done := 0; done < each; {
			cur, err := s.Get(ctx, "counter")
			if err != nil {
				return err
			}
			var n int
			fmt.Sscan(cur.Account.DisplayName, &n)
			cur.Account.DisplayName = fmt.Sprint(n + 1)
			if _, err := s.Update(ctx, cur); errors.Is(err, connection.ErrConflict) {
				continue // lost the race: read again
			} else if err != nil {
				return err
			}
			done++
		}
		return nil
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
	}
	if got := mustGet(t, s, "counter").Account.DisplayName; got != fmt.Sprint(workers*each) {
		t.Errorf("counter = %s after %d conditional increments: updates were lost", got, workers*each)
	}
}

func testDelete(t *testing.T, s connection.Store, _ connection.PendingStore) {
	created := mustCreate(t, s, sample("u1"))
	mustCreate(t, s, sample("u2"))
	if err := s.Delete(t.Context(), "u1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Get(t.Context(), "u1")
	wantErr(t, "Get after Delete", err, connection.ErrNotFound)
	if err := s.Delete(t.Context(), "u1"); err != nil {
		t.Errorf("Delete of a deleted connection: %v, want nil", err)
	}
	if err := s.Delete(t.Context(), "never"); err != nil {
		t.Errorf("Delete of a connection that never existed: %v, want nil", err)
	}
	_, err = s.Update(t.Context(), created)
	wantErr(t, "Update after Delete", err, connection.ErrNotFound)
	assertConnection(t, "the other connection", mustGet(t, s, "u2"), sample("u2"))
	ids := listAll(t, s, "", 10)
	if !slices.Equal(ids, []string{"u2"}) {
		t.Errorf("List after Delete = %q, want [u2]", ids)
	}
}

func testTokensRoundTrip(t *testing.T, s connection.Store, _ connection.PendingStore) {
	long := strings.Repeat("eyJhbGciOiJSUzI1NiJ9-", 400) // ~8 KB, larger than real tokens
	tests := []struct{ name, at, rt string }{
		{"jwt-like", "eyJ0eXAiOiJKV1QiLCJub25jZSI6IjEyMyJ9.eyJhdWQiOiIwMDAwIn0.c2ln", "0.AXoA-personal~refresh_token"},
		{"long", long, long + "rt"},
		{"unicode and separators", "ünï|cødé 日本 'q' \"dq\" \\ / # ? % ~", "rt|with|pipes||"},
		{"access only", "at-only", ""},
		{"refresh only", "", "rt-only"},
		{"none", "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sample(fmt.Sprintf("tok-%d", i))
			c.AccessToken, c.RefreshToken = tt.at, tt.rt
			created := mustCreate(t, s, c)
			got := mustGet(t, s, c.UserID)
			if got.AccessToken != tt.at || got.RefreshToken != tt.rt {
				t.Errorf("tokens after Create: got (%.40q, %.40q), want (%.40q, %.40q)", got.AccessToken, got.RefreshToken, tt.at, tt.rt)
			}
			// And through an Update, which seals again.
			created.AccessToken, created.RefreshToken = tt.rt, tt.at
			if _, err := s.Update(t.Context(), created); err != nil {
				t.Fatalf("Update: %v", err)
			}
			got = mustGet(t, s, c.UserID)
			if got.AccessToken != tt.rt || got.RefreshToken != tt.at {
				t.Errorf("tokens after Update: got (%.40q, %.40q), want (%.40q, %.40q)", got.AccessToken, got.RefreshToken, tt.rt, tt.at)
			}
		})
	}
}

// EdgeUserIDs are contract-valid user_ids at the rule's edges: every
// allowed character, the escape character of v1's key encoding and what v1
// encoded other ids to (now ordinary ids of their own), dots other than
// "." and "..", and the longest allowed.
func EdgeUserIDs() []string {
	return []string{
		"42", "a", "ada@contoso.com", "A-Z.a_z~0@9", "~", "~~41", "a~2Fb", "x~23y~3Fz",
		"...", ".a", "a.", "-", "_", "@", "@@", "_-.~@",
		strings.Repeat("z", 256), strings.Repeat("~", 256),
	}
}

// RejectedUserIDs holds one or more ids of every class contract v2
// rejects: "/", "#", "?", "\", "%", space, non-ASCII, ".", "..", 257
// characters, plus empty, control characters, invalid UTF-8 and the other
// reserved or quoting characters. Every route answers them 400
// invalid_request and every store refuses them before any I/O.
func RejectedUserIDs() []string {
	return []string{
		"/", "a/b", "#", "x#y", "?", "x?z", `\`, `back\slash`, "%", "%2F", "percent%2F", "a%3Fb",
		" ", "sp ace", " leading", "trailing ", "ü", "ünïcødé", "日本", "emoji-🙂", "tab-less\u00a0nbsp",
		".", "..", strings.Repeat("z", 257), strings.Repeat("é", 128),
		"", "nul\x00", "bell\x07", "del\x7f", "newline\n", string([]byte{0xff, 0xfe}),
		"quote'", "dq\"", "plus+", "a&b", "a=b", "a;b", "a:b", "a,b", "(x)", "a*b", "a!b", "a$b", "[x]", "{x}", "<x>", "a|b", "a^b", "`x`",
	}
}

func testEdgeUserIDs(t *testing.T, s connection.Store, _ connection.PendingStore) {
	ids := EdgeUserIDs()
	for _, id := range ids {
		if err := connection.ValidUserID(id); err != nil {
			t.Fatalf("fixture %q is not a valid user_id: %v", id, err)
		}
		mustCreate(t, s, sample(id))
	}
	for _, id := range ids {
		got := mustGet(t, s, id)
		assertConnection(t, fmt.Sprintf("Get(%q)", id), got, sample(id))
		next := got
		next.RefreshToken = "rotated-" + id
		if _, err := s.Update(t.Context(), next); err != nil {
			t.Errorf("Update(%q): %v", id, err)
		}
		if got := mustGet(t, s, id); got.RefreshToken != next.RefreshToken {
			t.Errorf("Get(%q) after Update: refresh token %q, want %q", id, got.RefreshToken, next.RefreshToken)
		}
	}
	listed := listAll(t, s, "", 7)
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(listed, want) {
		t.Errorf("List = %q\nwant %q", listed, want)
	}
	for _, id := range ids {
		if err := s.Delete(t.Context(), id); err != nil {
			t.Errorf("Delete(%q): %v", id, err)
		}
		_, err := s.Get(t.Context(), id)
		wantErr(t, fmt.Sprintf("Get(%q) after Delete", id), err, connection.ErrNotFound)
	}
}

func testInvalidUserIDs(t *testing.T, s connection.Store, _ connection.PendingStore) {
	for _, id := range RejectedUserIDs() {
		c := sample(id)
		_, err := s.Create(t.Context(), c)
		wantErr(t, fmt.Sprintf("Create(%q)", id), err, connection.ErrInvalidUserID)
		_, err = s.Get(t.Context(), id)
		wantErr(t, fmt.Sprintf("Get(%q)", id), err, connection.ErrInvalidUserID)
		err = s.Delete(t.Context(), id)
		wantErr(t, fmt.Sprintf("Delete(%q)", id), err, connection.ErrInvalidUserID)
	}
	bad := sample("ok")
	bad.Status = "disconnected"
	_, err := s.Create(t.Context(), bad)
	wantErr(t, "Create with an unknown status", err, tablestore.ErrInvalidConnection)
	_, err = s.Get(t.Context(), "ok")
	wantErr(t, "Get after the refused Create", err, connection.ErrNotFound)
}

// listAll pages through every connection and returns the sorted user_ids,
// failing t on a duplicate, a token in a listing, or a page that is not
// full before the last.
func listAll(t *testing.T, s connection.Store, status connection.Status, limit int) []string {
	t.Helper()
	pages := listPages(t, s, status, limit)
	var ids []string
	for _, p := range pages {
		for _, c := range p.Connections {
			ids = append(ids, c.UserID)
		}
	}
	slices.Sort(ids)
	return ids
}

func listPages(t *testing.T, s connection.Store, status connection.Status, limit int) []connection.Page {
	t.Helper()
	var pages []connection.Page
	seen := map[string]bool{}
	cursor := ""
	for {
		p, err := s.List(t.Context(), connection.ListQuery{Status: status, Limit: limit, Cursor: cursor})
		if err != nil {
			t.Fatalf("List(status %q, limit %d, page %d): %v", status, limit, len(pages)+1, err)
		}
		pages = append(pages, p)
		if len(p.Connections) > limit {
			t.Fatalf("page %d has %d connections, limit %d", len(pages), len(p.Connections), limit)
		}
		for _, c := range p.Connections {
			if seen[c.UserID] {
				t.Errorf("%q listed twice", c.UserID)
			}
			seen[c.UserID] = true
			if c.AccessToken != "" || c.RefreshToken != "" {
				t.Errorf("List returned tokens for %q", c.UserID)
			}
			if status != "" && c.Status != status {
				t.Errorf("List(status %q) returned %q with status %q", status, c.UserID, c.Status)
			}
			if c.ETag == "" {
				t.Errorf("List returned %q without an ETag", c.UserID)
			}
		}
		if p.NextCursor == "" {
			return pages
		}
		if len(p.Connections) != limit {
			t.Errorf("page %d has %d connections and a next cursor: want full pages (%d) before the last", len(pages), len(p.Connections), limit)
		}
		if len(pages) > 10000 {
			t.Fatal("List never ends")
		}
		cursor = p.NextCursor
	}
}

func testListEmpty(t *testing.T, s connection.Store, _ connection.PendingStore) {
	p, err := s.List(t.Context(), connection.ListQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Connections) != 0 || p.NextCursor != "" {
		t.Errorf("List of an empty store = %d connections, cursor %q", len(p.Connections), p.NextCursor)
	}
	// Empty, not nil: a page encoded as JSON lists [], never null.
	if p.Connections == nil {
		t.Error("List of an empty store returned nil Connections, want an empty slice")
	}
}

// seed creates n connections, every third reconnect_required, some with
// weird ids, and returns them by user_id.
func seed(t *testing.T, s connection.Store, n int) map[string]connection.Connection {
	t.Helper()
	all := make(map[string]connection.Connection, n)
	for i := range n {
		id := fmt.Sprintf("user-%04d", i)
		if i%5 == 0 {
			id = fmt.Sprintf("w~%d.@_", i)
		}
		c := sample(id)
		if i%3 == 0 {
			c.Status = connection.StatusReconnectRequired
			c.LastError = &connection.LastError{Code: "invalid_grant", At: base}
		}
		c.Account.Email = fmt.Sprintf("user%d@contoso.com", i)
		all[id] = mustCreate(t, s, c)
	}
	return all
}

func testListExactlyOnce(t *testing.T, s connection.Store, _ connection.PendingStore) {
	all := seed(t, s, 250)
	byStatus := map[connection.Status][]string{}
	for id, c := range all {
		byStatus[""] = append(byStatus[""], id)
		byStatus[c.Status] = append(byStatus[c.Status], id)
	}
	for _, status := range []connection.Status{"", connection.StatusReconnectRequired, connection.StatusConnected} {
		for _, limit := range []int{7, 1000} {
			t.Run(fmt.Sprintf("status=%q/limit=%d", status, limit), func(t *testing.T) {
				pages := listPages(t, s, status, limit)
				var got []string
				for _, p := range pages {
					for _, c := range p.Connections {
						got = append(got, c.UserID)
						assertConnection(t, "listed "+c.UserID, c, withoutTokens(all[c.UserID]))
					}
				}
				slices.Sort(got)
				want := slices.Sorted(slices.Values(byStatus[status]))
				if !slices.Equal(got, want) {
					t.Errorf("listed %d connections, want each of %d exactly once", len(got), len(want))
				}
				if limit >= len(want) && len(pages) != 1 {
					t.Errorf("%d pages for %d connections with limit %d, want 1", len(pages), len(want), limit)
				}
			})
		}
	}
}

func testListExactlyOnceUnderWrites(t *testing.T, s connection.Store, _ connection.PendingStore) {
	all := seed(t, s, 40)
	seen := map[string]int{}
	deleted := map[string]bool{}
	cursor := ""
	for page := 0; ; page++ {
		p, err := s.List(t.Context(), connection.ListQuery{Limit: 6, Cursor: cursor})
		if err != nil {
			t.Fatalf("List page %d: %v", page, err)
		}
		for _, c := range p.Connections {
			seen[c.UserID]++
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		// Between pages the sweep refreshes what it saw, users connect and
		// disconnect: none of it may repeat or skip a connection.
		for _, c := range p.Connections {
			cur := mustGet(t, s, c.UserID)
			cur.LastRefreshedAt = base.Add(time.Duration(page) * time.Minute)
			cur.AccessToken = fmt.Sprintf("refreshed-%d", page)
			if _, err := s.Update(t.Context(), cur); err != nil {
				t.Fatalf("Update between pages: %v", err)
			}
		}
		victim := p.Connections[0].UserID
		if err := s.Delete(t.Context(), victim); err != nil {
			t.Fatal(err)
		}
		deleted[victim] = true
		mustCreate(t, s, sample(fmt.Sprintf("new-%d", page)))
	}
	for id := range all {
		if seen[id] != 1 {
			t.Errorf("%q listed %d times, want 1", id, seen[id])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%q listed %d times", id, n)
		}
	}
}

func testListETagUpdates(t *testing.T, s connection.Store, _ connection.PendingStore) {
	mustCreate(t, s, sample("u1"))
	p, err := s.List(t.Context(), connection.ListQuery{Limit: 10})
	if err != nil || len(p.Connections) != 1 {
		t.Fatalf("List = %v, %v", p, err)
	}
	// The sweep lists, then refreshes with a full read; but a listed ETag
	// must still be the row's version.
	full := mustGet(t, s, "u1")
	if p.Connections[0].ETag != full.ETag {
		t.Errorf("listed ETag %q, Get ETag %q", p.Connections[0].ETag, full.ETag)
	}
}

func testListBadCursor(t *testing.T, s connection.Store, _ connection.PendingStore) {
	seed(t, s, 30)
	first, err := s.List(t.Context(), connection.ListQuery{Limit: 3})
	if err != nil || first.NextCursor == "" {
		t.Fatalf("List = %d connections, cursor %q, %v", len(first.Connections), first.NextCursor, err)
	}
	filtered, err := s.List(t.Context(), connection.ListQuery{Status: connection.StatusReconnectRequired, Limit: 3})
	if err != nil || filtered.NextCursor == "" {
		t.Fatalf("filtered List = %d connections, cursor %q, %v", len(filtered.Connections), filtered.NextCursor, err)
	}
	// The cursors work where they belong.
	if _, err := s.List(t.Context(), connection.ListQuery{Limit: 3, Cursor: first.NextCursor}); err != nil {
		t.Fatalf("List with its own cursor: %v", err)
	}
	if _, err := s.List(t.Context(), connection.ListQuery{Status: connection.StatusReconnectRequired, Limit: 50, Cursor: filtered.NextCursor}); err != nil {
		t.Fatalf("filtered List with its own cursor and another limit: %v", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name   string
		status connection.Status
		cursor string
	}{
		{"garbage", "", "not a cursor!"},
		{"base64 of text", "", b64([]byte("hello"))},
		{"base64 of an empty object", "", b64([]byte("{}"))},
		{"base64 of JSON null", "", b64([]byte("null"))},
		{"trailing bytes", "", first.NextCursor + "AAAA"},
		{"padded base64", "", base64.URLEncoding.EncodeToString([]byte("{}"))},
		{"truncated", "", first.NextCursor[:len(first.NextCursor)/2]},
		{"unfiltered cursor with a filter", connection.StatusReconnectRequired, first.NextCursor},
		{"filtered cursor without the filter", "", filtered.NextCursor},
		{"filtered cursor with the other filter", connection.StatusConnected, filtered.NextCursor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.List(t.Context(), connection.ListQuery{Status: tt.status, Limit: 3, Cursor: tt.cursor})
			if !errors.Is(err, connection.ErrBadCursor) {
				t.Errorf("List(cursor %q) = %d connections, %v; want ErrBadCursor", tt.cursor, len(p.Connections), err)
			}
		})
	}
}

func testListInvalidQuery(t *testing.T, s connection.Store, _ connection.PendingStore) {
	for _, q := range []connection.ListQuery{
		{Limit: 0}, {Limit: -1}, {Limit: 1001}, {Limit: 10, Status: "disconnected"},
	} {
		_, err := s.List(t.Context(), q)
		wantErr(t, fmt.Sprintf("List(%+v)", q), err, tablestore.ErrInvalidQuery)
		if errors.Is(err, connection.ErrBadCursor) {
			t.Errorf("List(%+v) reports a bad cursor for a bad query", q)
		}
	}
	for _, limit := range []int{1, 1000} {
		if _, err := s.List(t.Context(), connection.ListQuery{Limit: limit}); err != nil {
			t.Errorf("List(limit %d): %v", limit, err)
		}
	}
}

// PendingID returns a valid pending ID (hex SHA-256) derived from seed.
func PendingID(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(sum[:])
}

func samplePending(kind connection.PendingKind, seed string) connection.Pending {
	p := connection.Pending{
		Kind:      kind,
		ID:        PendingID(seed),
		UserID:    "a.b~c@" + seed,
		ReturnURL: "https://audits.megsupporttools.com/accounts/settings/?tab=microsoft&x=" + seed,
		LoginHint: "ada@contoso.com",
		CreatedAt: base,
		ExpiresAt: base.Add(10 * time.Minute),
	}
	switch kind {
	case connection.PendingState:
		p.Verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-" + seed
		p.BrowserHash = PendingID("cookie-" + seed)
	case connection.PendingConnect:
		p.ReturnURL, p.LoginHint = "", ""
		p.Grant = connection.Grant{
			AccessToken: "eyJ0eXAiOiJKV1QiLCJub25jZSI6IjEyMyJ9.access-" + seed, RefreshToken: "0.AXoA-refresh-" + seed,
			ExpiresAt: base.Add(time.Hour), Scopes: []string{"User.Read", "Files.ReadWrite.All", "offline_access"},
			Account: connection.Account{ID: "oid-" + seed, TenantID: "tid", Email: "ada@contoso.com", DisplayName: "Ada Lovelace"},
		}
	}
	return p
}

func assertPending(t *testing.T, what string, got, want connection.Pending) {
	t.Helper()
	g, w := got, want
	g.ETag, w.ETag = "", ""
	if !g.CreatedAt.Equal(w.CreatedAt) || !g.ExpiresAt.Equal(w.ExpiresAt) {
		t.Errorf("%s: times (%v, %v), want (%v, %v)", what, g.CreatedAt, g.ExpiresAt, w.CreatedAt, w.ExpiresAt)
	}
	g.CreatedAt, g.ExpiresAt, w.CreatedAt, w.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	gg, wg := g.Grant, w.Grant
	g.Grant, w.Grant = connection.Grant{}, connection.Grant{}
	if !gg.ExpiresAt.Equal(wg.ExpiresAt) || gg.AccessToken != wg.AccessToken || gg.RefreshToken != wg.RefreshToken ||
		gg.Account != wg.Account || !slices.Equal(gg.Scopes, wg.Scopes) {
		t.Errorf("%s: grant differs: got %v account %+v scopes %q, want %v account %+v scopes %q (tokens equal: %t, %t)",
			what, gg, gg.Account, gg.Scopes, wg, wg.Account, wg.Scopes, gg.AccessToken == wg.AccessToken, gg.RefreshToken == wg.RefreshToken)
	}
	if !reflect.DeepEqual(g, w) {
		// Compare field by field to name the difference without printing
		// a verifier into a shared log.
		t.Errorf("%s differs: got %v (verifier ok: %t, return_url %q, hint %q, browser %q), want %v",
			what, g, g.Verifier == w.Verifier, g.ReturnURL, g.LoginHint, g.BrowserHash, w)
	}
}

func mustGetPending(t *testing.T, p connection.PendingStore, kind connection.PendingKind, id string) connection.Pending {
	t.Helper()
	got, err := p.GetPending(t.Context(), kind, id)
	if err != nil {
		t.Fatalf("GetPending(%s, %s): %v", kind, id, err)
	}
	return got
}

func testPendingRoundTrip(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	state := samplePending(connection.PendingState, "one")
	if err := ps.PutPending(t.Context(), state); err != nil {
		t.Fatalf("PutPending(state): %v", err)
	}
	got := mustGetPending(t, ps, connection.PendingState, state.ID)
	assertPending(t, "state", got, state)
	if got.ETag == "" || got.Used {
		t.Errorf("new state: ETag %q, Used %t; want an ETag and unused", got.ETag, got.Used)
	}

	// A session with the same ID is a different entry.
	session := samplePending(connection.PendingSession, "one")
	if err := ps.PutPending(t.Context(), session); err != nil {
		t.Fatalf("PutPending(session with the state's ID): %v", err)
	}
	assertPending(t, "session", mustGetPending(t, ps, connection.PendingSession, session.ID), session)
	assertPending(t, "state after the session", mustGetPending(t, ps, connection.PendingState, state.ID), state)

	again := state
	again.Verifier = "another-verifier"
	err := ps.PutPending(t.Context(), again)
	wantErr(t, "PutPending of an existing ID", err, connection.ErrConflict)
	assertPending(t, "state after the conflicting put", mustGetPending(t, ps, connection.PendingState, state.ID), state)

	_, err = ps.GetPending(t.Context(), connection.PendingSession, PendingID("never"))
	wantErr(t, "GetPending of a missing ID", err, connection.ErrNotFound)

	// A zero CreatedAt is stamped by the store.
	bare := samplePending(connection.PendingSession, "bare")
	bare.CreatedAt = time.Time{}
	if err := ps.PutPending(t.Context(), bare); err != nil {
		t.Fatal(err)
	}
	if got := mustGetPending(t, ps, connection.PendingSession, bare.ID); got.CreatedAt.IsZero() {
		t.Error("PutPending with zero CreatedAt stored none")
	}
}

func testPendingInvalid(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	valid := samplePending(connection.PendingState, "x")
	tests := []struct {
		name   string
		mutate func(*connection.Pending)
		want   error
	}{
		{"unknown kind", func(p *connection.Pending) { p.Kind = "cookie" }, tablestore.ErrInvalidPending},
		{"empty id", func(p *connection.Pending) { p.ID = "" }, tablestore.ErrInvalidPending},
		{"short id", func(p *connection.Pending) { p.ID = p.ID[:63] }, tablestore.ErrInvalidPending},
		{"upper-case id", func(p *connection.Pending) { p.ID = strings.ToUpper(p.ID) }, tablestore.ErrInvalidPending},
		{"id with a slash", func(p *connection.Pending) { p.ID = p.ID[:63] + "/" }, tablestore.ErrInvalidPending},
		{"no expiry", func(p *connection.Pending) { p.ExpiresAt = time.Time{} }, tablestore.ErrInvalidPending},
		{"invalid user", func(p *connection.Pending) { p.UserID = ".." }, connection.ErrInvalidUserID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid
			tt.mutate(&p)
			wantErr(t, "PutPending", ps.PutPending(t.Context(), p), tt.want)
		})
	}
	_, err := ps.GetPending(t.Context(), connection.PendingState, "../"+valid.ID)
	wantErr(t, "GetPending with a bad id", err, tablestore.ErrInvalidPending)
}

func testMarkUsed(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	state := samplePending(connection.PendingState, "mark")
	if err := ps.PutPending(t.Context(), state); err != nil {
		t.Fatal(err)
	}
	read := mustGetPending(t, ps, connection.PendingState, state.ID)
	if err := ps.MarkUsed(t.Context(), read); err != nil {
		t.Fatalf("MarkUsed: %v", err)
	}
	used := mustGetPending(t, ps, connection.PendingState, state.ID)
	if !used.Used {
		t.Error("entry not used after MarkUsed")
	}
	if used.ETag == read.ETag {
		t.Errorf("MarkUsed left the ETag at %q", used.ETag)
	}
	want := state
	want.Used = true
	assertPending(t, "after MarkUsed", used, want) // the verifier still opens

	wantErr(t, "MarkUsed with the pre-use read", ps.MarkUsed(t.Context(), read), connection.ErrConflict)
	wantErr(t, "MarkUsed of an entry read as used", ps.MarkUsed(t.Context(), used), connection.ErrConflict)
	noETag := read
	noETag.ETag = ""
	wantErr(t, "MarkUsed without an ETag", ps.MarkUsed(t.Context(), noETag), connection.ErrConflict)

	ghost := read
	ghost.ID = PendingID("ghost")
	wantErr(t, "MarkUsed of a missing entry", ps.MarkUsed(t.Context(), ghost), connection.ErrNotFound)
}

func testMarkUsedRace(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	for _, n := range []int{2, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := samplePending(connection.PendingSession, fmt.Sprint("race-", n))
			if err := ps.PutPending(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			read := mustGetPending(t, ps, p.Kind, p.ID)
			errs := race(n, func(int) error { return ps.MarkUsed(context.Background(), read) })
			wins := 0
			for _, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, connection.ErrConflict):
					t.Errorf("losing MarkUsed: %v, want ErrConflict", err)
				}
			}
			if wins != 1 {
				t.Errorf("%d of %d racing MarkUsed calls won, want exactly 1", wins, n)
			}
			if got := mustGetPending(t, ps, p.Kind, p.ID); !got.Used {
				t.Error("entry not used after the race")
			}
		})
	}
}

func testDeleteExpired(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	now := base
	// Azurite compares datetimes in milliseconds (Azure in 100 ns ticks):
	// the closest expiry tested is one millisecond before now.
	expiries := map[string]time.Duration{
		"long-gone": -2 * time.Hour, "just-gone": -time.Second, "barely-gone": -time.Millisecond,
		"at-now": 0, "soon": time.Second, "later": 10 * time.Minute,
	}
	wantGone := map[string]bool{"long-gone": true, "just-gone": true, "barely-gone": true}
	for name, d := range expiries {
		for _, kind := range pendingKinds {
			p := samplePending(kind, name)
			p.CreatedAt = now.Add(d - 10*time.Minute)
			p.ExpiresAt = now.Add(d)
			if err := ps.PutPending(t.Context(), p); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A used entry expires like any other.
	used := mustGetPending(t, ps, connection.PendingState, PendingID("just-gone"))
	if err := ps.MarkUsed(t.Context(), used); err != nil {
		t.Fatal(err)
	}

	n, err := ps.DeleteExpired(t.Context(), now)
	if err != nil {
		t.Fatalf("DeleteExpired: %v", err)
	}
	if want := len(pendingKinds) * len(wantGone); n != want {
		t.Errorf("DeleteExpired = %d, want %d", n, want)
	}
	for name := range expiries {
		for _, kind := range pendingKinds {
			_, err := ps.GetPending(t.Context(), kind, PendingID(name))
			switch {
			case wantGone[name] && !errors.Is(err, connection.ErrNotFound):
				t.Errorf("%s %s: GetPending = %v after DeleteExpired, want ErrNotFound", kind, name, err)
			case !wantGone[name] && err != nil:
				t.Errorf("%s %s (not expired): GetPending = %v", kind, name, err)
			}
		}
	}
	if n, err := ps.DeleteExpired(t.Context(), now); err != nil || n != 0 {
		t.Errorf("second DeleteExpired = %d, %v; want 0, nil", n, err)
	}
	if n, err := ps.DeleteExpired(t.Context(), now.Add(time.Hour)); err != nil || n != len(pendingKinds)*(len(expiries)-len(wantGone)) {
		t.Errorf("DeleteExpired an hour later = %d, %v; want %d", n, err, len(pendingKinds)*(len(expiries)-len(wantGone)))
	}
}

// pendingKinds are the kinds with a user and a 10-minute life; the sweep's
// clean-up removes each once expired.
var pendingKinds = []connection.PendingKind{connection.PendingSession, connection.PendingState, connection.PendingConnect}

// testPendingConnectRoundTrip: the signed-in result comes back whole,
// tokens opened (stores seal them at rest: tablestore's raw-entity tests
// prove that), and only a connect's grant is kept.
func testPendingConnectRoundTrip(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	pc := samplePending(connection.PendingConnect, "connect")
	if err := ps.PutPending(t.Context(), pc); err != nil {
		t.Fatalf("PutPending(connect): %v", err)
	}
	got := mustGetPending(t, ps, connection.PendingConnect, pc.ID)
	assertPending(t, "connect", got, pc)
	if got.ETag == "" || got.Used {
		t.Errorf("new connect: ETag %q, Used %t", got.ETag, got.Used)
	}
	// The same ID as another kind is another entry, and holds no grant.
	st := samplePending(connection.PendingState, "connect")
	if err := ps.PutPending(t.Context(), st); err != nil {
		t.Fatal(err)
	}
	if g := mustGetPending(t, ps, connection.PendingState, st.ID).Grant; g.AccessToken != "" || g.RefreshToken != "" {
		t.Errorf("a state reads back with a grant: %v", g)
	}
	assertPending(t, "connect after the state", mustGetPending(t, ps, connection.PendingConnect, pc.ID), pc)
	again := pc
	again.Grant.RefreshToken = "someone-else's"
	wantErr(t, "PutPending of an existing connect", ps.PutPending(t.Context(), again), connection.ErrConflict)
	assertPending(t, "connect after the conflicting put", mustGetPending(t, ps, connection.PendingConnect, pc.ID), pc)
}

// testDeletePending: the spend of a connect code is conditional on the
// ETag read and single use; a spent entry is gone with its tokens.
func testDeletePending(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	pc := samplePending(connection.PendingConnect, "spend")
	if err := ps.PutPending(t.Context(), pc); err != nil {
		t.Fatal(err)
	}
	read := mustGetPending(t, ps, connection.PendingConnect, pc.ID)
	noETag := read
	noETag.ETag = ""
	wantErr(t, "DeletePending without an ETag", ps.DeletePending(t.Context(), noETag), connection.ErrConflict)
	stale := read
	stale.ETag = `W/"datetime'2001-01-01T00%3A00%3A00.0000000Z'"`
	wantErr(t, "DeletePending with another ETag", ps.DeletePending(t.Context(), stale), connection.ErrConflict)
	assertPending(t, "connect after refused spends", mustGetPending(t, ps, connection.PendingConnect, pc.ID), pc)

	if err := ps.DeletePending(t.Context(), read); err != nil {
		t.Fatalf("DeletePending: %v", err)
	}
	_, err := ps.GetPending(t.Context(), connection.PendingConnect, pc.ID)
	wantErr(t, "GetPending after the spend", err, connection.ErrNotFound)
	if err := ps.DeletePending(t.Context(), read); !errors.Is(err, connection.ErrNotFound) && !errors.Is(err, connection.ErrConflict) {
		t.Errorf("second DeletePending = %v, want ErrNotFound or ErrConflict", err)
	}

	// A spend after any change (here: MarkUsed) loses.
	other := samplePending(connection.PendingConnect, "changed")
	if err := ps.PutPending(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	before := mustGetPending(t, ps, connection.PendingConnect, other.ID)
	if err := ps.MarkUsed(t.Context(), before); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "DeletePending with the read before a change", ps.DeletePending(t.Context(), before), connection.ErrConflict)
	mustGetPending(t, ps, connection.PendingConnect, other.ID)
	_, err = ps.GetPending(t.Context(), connection.PendingConnect, PendingID("never"))
	wantErr(t, "GetPending of a missing connect", err, connection.ErrNotFound)
}

func testDeletePendingRace(t *testing.T, _ connection.Store, ps connection.PendingStore) {
	for _, n := range []int{2, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			p := samplePending(connection.PendingConnect, fmt.Sprint("spend-race-", n))
			if err := ps.PutPending(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			read := mustGetPending(t, ps, p.Kind, p.ID)
			errs := race(n, func(int) error { return ps.DeletePending(context.Background(), read) })
			wins := 0
			for _, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, connection.ErrConflict) && !errors.Is(err, connection.ErrNotFound):
					t.Errorf("losing DeletePending: %v, want ErrConflict or ErrNotFound", err)
				}
			}
			if wins != 1 {
				t.Errorf("%d of %d racing DeletePending calls won, want exactly 1", wins, n)
			}
			_, err := ps.GetPending(t.Context(), p.Kind, p.ID)
			wantErr(t, "GetPending after the race", err, connection.ErrNotFound)
		})
	}
}

// race runs fn n times concurrently, released together, and returns each
// call's error.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// testThrottledUntil: a connection's throttling pause (AADSTS50196) is a
// plain column every instance and the sweep see: Get, Peek and List return
// it, an ETag-conditional Update sets and clears it, and a stale write
// neither sets nor loses it.
func testThrottledUntil(t *testing.T, s connection.Store, _ connection.PendingStore) {
	c := sample("paused")
	c.ThrottledUntil = time.Time{}
	created := mustCreate(t, s, c)
	if got := mustGet(t, s, "paused"); !got.ThrottledUntil.IsZero() {
		t.Fatalf("a new connection is paused until %v", got.ThrottledUntil)
	}
	until := base.Add(90 * time.Second)
	paused := created
	paused.ThrottledUntil = until
	saved, err := s.Update(t.Context(), paused)
	if err != nil {
		t.Fatalf("Update setting ThrottledUntil: %v", err)
	}
	if got := mustGet(t, s, "paused"); !got.ThrottledUntil.Equal(until) {
		t.Errorf("Get: ThrottledUntil = %v, want %v", got.ThrottledUntil, until)
	}
	if got, err := s.Peek(t.Context(), "paused"); err != nil || !got.ThrottledUntil.Equal(until) {
		t.Errorf("Peek: ThrottledUntil = %v (%v), want %v", got.ThrottledUntil, err, until)
	}
	p, err := s.List(t.Context(), connection.ListQuery{Limit: 10})
	if err != nil || len(p.Connections) != 1 || !p.Connections[0].ThrottledUntil.Equal(until) {
		t.Errorf("List = %v, %v; want ThrottledUntil %v", p.Connections, err, until)
	}

	stale := created // read before the pause was stored
	stale.ThrottledUntil = time.Time{}
	_, err = s.Update(t.Context(), stale)
	wantErr(t, "Update clearing the pause with a stale ETag", err, connection.ErrConflict)
	if got := mustGet(t, s, "paused"); !got.ThrottledUntil.Equal(until) {
		t.Errorf("a stale Update changed ThrottledUntil to %v", got.ThrottledUntil)
	}

	cleared := saved
	cleared.ThrottledUntil = time.Time{}
	if _, err := s.Update(t.Context(), cleared); err != nil {
		t.Fatalf("Update clearing ThrottledUntil: %v", err)
	}
	if got := mustGet(t, s, "paused"); !got.ThrottledUntil.IsZero() {
		t.Errorf("cleared pause came back: %v", got.ThrottledUntil)
	}
}
