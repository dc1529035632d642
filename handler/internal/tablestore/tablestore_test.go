package tablestore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
	"github.com/megdocs/msconnector/handler/internal/tablestore/storetest"
)

// One Azurite for the whole test binary, stopped after the last test.
func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

// keyring is a fixed, rotatable test keyring for the real sealing package.
type keyring struct {
	mu      sync.Mutex
	current string
	keys    map[string][]byte
}

func newKeyring(version string) *keyring {
	k := &keyring{keys: map[string][]byte{}}
	k.rotate(version)
	return k
}

// rotate adds a new key version and makes it current.
func (k *keyring) rotate(version string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	// Fixed bytes per version: deterministic, distinct.
	k.keys[version] = bytes.Repeat([]byte{byte(len(k.keys) + 1)}, sealing.KeySize)
	k.current = version
}

func (k *keyring) Current(context.Context) (sealing.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return sealing.Key{Version: k.current, Bytes: k.keys[k.current]}, nil
}

func (k *keyring) Version(_ context.Context, v string) (sealing.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.keys[v]
	if !ok {
		return sealing.Key{}, fmt.Errorf("no key version %q", v)
	}
	return sealing.Key{Version: v, Bytes: b}, nil
}

// countingSealer counts Open calls.
type countingSealer struct {
	tablestore.Sealer
	opens atomic.Int64
}

func (c *countingSealer) Open(ctx context.Context, sealed string, aad []byte) ([]byte, error) {
	c.opens.Add(1)
	return c.Sealer.Open(ctx, sealed, aad)
}

// failingSealer cannot seal.
type failingSealer struct{ tablestore.Sealer }

var errSealerDown = errors.New("key vault unreachable")

func (failingSealer) Seal(context.Context, []byte, []byte) (string, error) {
	return "", errSealerDown
}

type fixture struct {
	svc     *aztables.ServiceClient
	store   *tablestore.Store
	keys    *keyring
	sealer  *countingSealer
	opts    tablestore.Options
	conns   *aztables.Client
	pending *aztables.Client
}

func serviceClient(t *testing.T) *aztables.ServiceClient {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(azurite.ForTest(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// uniqueTable returns a fresh legal table name, dropped when t ends.
func uniqueTable(t *testing.T, svc *aztables.ServiceClient, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	t.Cleanup(func() {
		// Best effort: the emulator is in memory and dies with the binary.
		_, _ = svc.DeleteTable(context.Background(), name, nil)
	})
	return name
}

// newFixture returns a Store on fresh tables of the shared emulator.
func newFixture(t *testing.T, opts tablestore.Options) *fixture {
	t.Helper()
	svc := serviceClient(t)
	if opts.ConnectionsTable == "" {
		opts.ConnectionsTable = uniqueTable(t, svc, "conn")
	}
	if opts.PendingTable == "" {
		opts.PendingTable = uniqueTable(t, svc, "sess")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keys := newKeyring("k1")
	sealer := &countingSealer{Sealer: sealing.New(keys)}
	return &fixture{
		svc: svc, keys: keys, sealer: sealer, opts: opts,
		store:   tablestore.New(svc, sealer, opts),
		conns:   svc.NewClient(opts.ConnectionsTable),
		pending: svc.NewClient(opts.PendingTable),
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (connection.Store, connection.PendingStore) {
		f := newFixture(t, tablestore.Options{})
		return f.store, f.store
	})
}

// rawEntities returns every entity of a table as the service sends it.
func rawEntities(t *testing.T, c *aztables.Client) []map[string]any {
	t.Helper()
	var out []map[string]any
	pager := c.NewListEntitiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page.Entities {
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
	}
	return out
}

func TestNothingSecretIsStoredInClear(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	ctx := t.Context()
	secrets := map[string]string{}
	for i, id := range []string{"42", "a.b~c", "ada@contoso.com"} {
		c := connection.Connection{
			UserID: id, Status: connection.StatusConnected,
			AccessToken:  fmt.Sprintf("AT-plain-%d-eyJ0eXAiOiJKV1QifQ", i),
			RefreshToken: fmt.Sprintf("RT-plain-%d-0.AXoAxyz", i),
			Scopes:       []string{"User.Read"},
		}
		secrets["access token "+id] = c.AccessToken
		secrets["refresh token "+id] = c.RefreshToken
		created, err := f.store.Create(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		// Update seals again: the rewrite must not leak either.
		created.AccessToken = fmt.Sprintf("AT-plain-updated-%d", i)
		secrets["updated access token "+id] = created.AccessToken
		if _, err := f.store.Update(ctx, created); err != nil {
			t.Fatal(err)
		}
	}
	for i, kind := range []connection.PendingKind{connection.PendingState, connection.PendingSession} {
		p := connection.Pending{
			Kind: kind, ID: storetest.PendingID(fmt.Sprint(i)), UserID: "42",
			Verifier:  fmt.Sprintf("VERIFIER-plain-%d-dBjftJeZ4CVP-mB92K27uhbUJU1p1r", i),
			ExpiresAt: time.Now().Add(time.Hour),
		}
		secrets["verifier "+string(kind)] = p.Verifier
		if err := f.store.PutPending(ctx, p); err != nil {
			t.Fatal(err)
		}
		got, err := f.store.GetPending(ctx, kind, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.store.MarkUsed(ctx, got); err != nil {
			t.Fatal(err)
		}
	}

	// A pending connect: the signed-in result waiting for the CMS. Its
	// tokens are sealed like a connection's; its connect code is stored
	// only as the SHA-256 that is its key.
	connectCode := "CONNECT-CODE-plain-Mx9vQ2wLk7RzT4pN8sYb3HcJ6dFgA1eU5"
	pc := connection.Pending{
		Kind: connection.PendingConnect, ID: storetest.PendingID(connectCode), UserID: "42",
		Grant: connection.Grant{
			AccessToken: "AT-pending-plain-eyJ0eXAiOiJKV1QifQ", RefreshToken: "RT-pending-plain-0.AXoAxyz",
			Account: connection.Account{ID: "oid", TenantID: "tid", Email: "ada@contoso.com"}, Scopes: []string{"User.Read"},
		},
		ExpiresAt: time.Now().Add(time.Hour),
	}
	secrets["connect code"] = connectCode
	secrets["pending access token"] = pc.Grant.AccessToken
	secrets["pending refresh token"] = pc.Grant.RefreshToken
	if err := f.store.PutPending(ctx, pc); err != nil {
		t.Fatal(err)
	}

	var all []map[string]any
	for _, c := range []*aztables.Client{f.conns, f.pending} {
		all = append(all, rawEntities(t, c)...)
	}
	if len(all) != 6 {
		t.Fatalf("%d raw entities, want 6", len(all))
	}
	for _, e := range all {
		for prop, v := range e {
			s := fmt.Sprint(v)
			for what, secret := range secrets {
				for _, form := range []string{
					secret,
					base64.StdEncoding.EncodeToString([]byte(secret)),
					base64.RawURLEncoding.EncodeToString([]byte(secret)),
					hex.EncodeToString([]byte(secret)),
				} {
					if strings.Contains(s, form) || strings.Contains(prop, form) {
						t.Errorf("entity %v/%v: property %s holds the %s", e["PartitionKey"], e["RowKey"], prop, what)
					}
				}
			}
		}
	}
	// The secrets are really there, sealed: Get gives them back.
	c, err := f.store.Get(ctx, "a.b~c")
	if err != nil || c.RefreshToken != secrets["refresh token a.b~c"] || c.AccessToken != secrets["updated access token a.b~c"] {
		t.Errorf("Get(a.b~c) = tokens (%q, %q), %v", c.AccessToken, c.RefreshToken, err)
	}
	got, err := f.store.GetPending(ctx, connection.PendingConnect, pc.ID)
	if err != nil || got.Grant.AccessToken != pc.Grant.AccessToken || got.Grant.RefreshToken != pc.Grant.RefreshToken {
		t.Errorf("GetPending(connect) = tokens ok (%t, %t), %v", got.Grant.AccessToken == pc.Grant.AccessToken, got.Grant.RefreshToken == pc.Grant.RefreshToken, err)
	}
}

// plainProps drops what the service adds (OData metadata, Timestamp).
func plainProps(e map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range e {
		if strings.HasPrefix(k, "odata.") || strings.HasSuffix(k, "@odata.type") || k == "Timestamp" {
			continue
		}
		out[k] = v
	}
	return out
}

func TestConnectionEntitySchema(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	at := time.Date(2026, 11, 26, 0, 55, 0, 0, time.UTC)
	c := connection.Connection{
		UserID: "u~1@x.y", Status: connection.StatusReconnectRequired,
		Account:     connection.Account{ID: "oid", TenantID: "tid", Email: "ada@contoso.com", DisplayName: "Ada"},
		Scopes:      []string{"User.Read", "Files.ReadWrite.All", "offline_access"},
		AccessToken: "at", RefreshToken: "rt",
		AccessTokenExpiresAt: at, ConnectedAt: at.Add(-time.Hour), LastRefreshedAt: at.Add(-time.Minute),
		LastUsedAt: at.Add(-time.Second), LastError: &connection.LastError{Code: "invalid_grant", At: at},
		ThrottledUntil: at.Add(time.Minute),
	}
	if _, err := f.store.Create(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	// The PartitionKey is the user_id as it is (v2 ids need no encoding).
	resp, err := f.conns.GetEntity(t.Context(), "u~1@x.y", "microsoft", nil)
	if err != nil {
		t.Fatalf("raw GetEntity with PartitionKey u~1@x.y: %v", err)
	}
	var e map[string]any
	if err := json.Unmarshal(resp.Value, &e); err != nil {
		t.Fatal(err)
	}
	props := plainProps(e)
	wantKeys := []string{
		"PartitionKey", "RowKey", "UserID", "Status", "AccountID", "TenantID", "Email", "DisplayName", "Scopes",
		"AccessTokenExpiresAt", "ConnectedAt", "LastRefreshedAt", "LastUsedAt", "LastErrorCode", "LastErrorAt", "ThrottledUntil",
		"AccessTokenSealed", "RefreshTokenSealed", "KeyVersion",
	}
	gotKeys := slices.Sorted(func(yield func(string) bool) {
		for k := range props {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(gotKeys, slices.Sorted(slices.Values(wantKeys))) {
		t.Errorf("columns = %q\nwant %q", gotKeys, slices.Sorted(slices.Values(wantKeys)))
	}
	for col, want := range map[string]string{
		"PartitionKey": "u~1@x.y", "RowKey": "microsoft", "UserID": "u~1@x.y", "Status": "reconnect_required",
		"AccountID": "oid", "TenantID": "tid", "Email": "ada@contoso.com", "DisplayName": "Ada",
		"Scopes": "User.Read Files.ReadWrite.All offline_access", "LastErrorCode": "invalid_grant",
		"KeyVersion": "k1", "AccessTokenExpiresAt": "2026-11-26T00:55:00Z", "LastErrorAt": "2026-11-26T00:55:00Z",
		"ThrottledUntil": "2026-11-26T00:56:00Z",
	} {
		if got := fmt.Sprint(props[col]); got != want && !(strings.HasSuffix(col, "At") && strings.TrimSuffix(got, ".0000000Z")+"Z" == want) {
			t.Errorf("column %s = %q, want %q", col, got, want)
		}
	}
	for _, col := range []string{"AccessTokenExpiresAt", "ConnectedAt", "LastRefreshedAt", "LastUsedAt", "LastErrorAt", "ThrottledUntil"} {
		if typ := e[col+"@odata.type"]; typ != "Edm.DateTime" {
			t.Errorf("column %s has type %v, want Edm.DateTime", col, typ)
		}
	}
	for _, col := range []string{"AccessTokenSealed", "RefreshTokenSealed"} {
		if v, _ := props[col].(string); !strings.HasPrefix(v, "v1.k1.") {
			t.Errorf("column %s = %.12q..., want a v1 value sealed with key k1", col, v)
		}
	}
}

func TestPendingEntitySchema(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	id := storetest.PendingID("s")
	p := connection.Pending{
		Kind: connection.PendingState, ID: id, UserID: "42", ReturnURL: "https://cms.example/back",
		LoginHint: "ada@contoso.com", Verifier: "verifier", BrowserHash: storetest.PendingID("cookie"),
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(10 * time.Minute),
	}
	if err := f.store.PutPending(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	resp, err := f.pending.GetEntity(t.Context(), id, "state", nil)
	if err != nil {
		t.Fatalf("raw GetEntity(%s, state): %v", id, err)
	}
	var e map[string]any
	if err := json.Unmarshal(resp.Value, &e); err != nil {
		t.Fatal(err)
	}
	props := plainProps(e)
	want := []string{"BrowserHash", "CreatedAt", "ExpiresAt", "KeyVersion", "LoginHint", "PartitionKey", "ReturnURL", "RowKey", "Used", "UserID", "VerifierSealed"}
	var got []string
	for k := range props {
		got = append(got, k)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("columns = %q\nwant %q", got, want)
	}
	if props["Used"] != false || props["KeyVersion"] != "k1" || e["ExpiresAt@odata.type"] != "Edm.DateTime" {
		t.Errorf("Used %v, KeyVersion %v, ExpiresAt type %v", props["Used"], props["KeyVersion"], e["ExpiresAt@odata.type"])
	}
	if v, _ := props["VerifierSealed"].(string); !strings.HasPrefix(v, "v1.k1.") {
		t.Errorf("VerifierSealed = %.12q..., want sealed", v)
	}
}

func TestPendingConnectEntitySchema(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	id := storetest.PendingID("code")
	at := time.Date(2026, 11, 26, 0, 55, 0, 0, time.UTC)
	p := connection.Pending{
		Kind: connection.PendingConnect, ID: id, UserID: "42",
		Grant: connection.Grant{AccessToken: "at", RefreshToken: "rt", ExpiresAt: at, Scopes: []string{"User.Read", "offline_access"},
			Account: connection.Account{ID: "oid", TenantID: "tid", Email: "ada@contoso.com", DisplayName: "Ada"}},
		CreatedAt: at.Add(-time.Hour), ExpiresAt: at.Add(-50 * time.Minute),
	}
	if err := f.store.PutPending(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	resp, err := f.pending.GetEntity(t.Context(), id, "connect", nil)
	if err != nil {
		t.Fatalf("raw GetEntity(%s, connect): %v", id, err)
	}
	var e map[string]any
	if err := json.Unmarshal(resp.Value, &e); err != nil {
		t.Fatal(err)
	}
	props := plainProps(e)
	want := []string{"AccessTokenExpiresAt", "AccessTokenSealed", "AccountID", "BrowserHash", "CreatedAt", "DisplayName", "Email", "ExpiresAt", "KeyVersion",
		"LoginHint", "PartitionKey", "RefreshTokenSealed", "ReturnURL", "RowKey", "Scopes", "TenantID", "Used", "UserID"}
	got := slices.Sorted(maps.Keys(props))
	if !slices.Equal(got, want) {
		t.Errorf("columns = %q\nwant %q", got, want)
	}
	for col, want := range map[string]string{"UserID": "42", "AccountID": "oid", "TenantID": "tid", "Email": "ada@contoso.com", "Scopes": "User.Read offline_access", "KeyVersion": "k1"} {
		if got := fmt.Sprint(props[col]); got != want {
			t.Errorf("column %s = %q, want %q", col, got, want)
		}
	}
	for _, col := range []string{"AccessTokenSealed", "RefreshTokenSealed"} {
		if v, _ := props[col].(string); !strings.HasPrefix(v, "v1.k1.") {
			t.Errorf("column %s = %.12q..., want sealed with key k1", col, v)
		}
	}
}

// A sealed value only opens in the row and column it was sealed for: an
// attacker with write access to the table cannot give user B user A's
// tokens, nor swap a user's access and refresh tokens.
func TestSealedValuesAreBoundToTheirRow(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	ctx := t.Context()
	for _, id := range []string{"alice", "bob"} {
		if _, err := f.store.Create(ctx, connection.Connection{UserID: id, Status: connection.StatusConnected, AccessToken: "at-" + id, RefreshToken: "rt-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	raw := func(pk string) map[string]any {
		resp, err := f.conns.GetEntity(ctx, pk, "microsoft", nil)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		if err := json.Unmarshal(resp.Value, &e); err != nil {
			t.Fatal(err)
		}
		return plainProps(e)
	}
	put := func(e map[string]any) {
		b, _ := json.Marshal(e)
		if _, err := f.conns.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
			t.Fatal(err)
		}
	}
	alice, bob := raw("alice"), raw("bob")

	bob["RefreshTokenSealed"] = alice["RefreshTokenSealed"]
	put(bob)
	if c, err := f.store.Get(ctx, "bob"); err == nil || errors.Is(err, connection.ErrNotFound) {
		t.Errorf("Get(bob) with alice's sealed refresh token = refresh %q, %v; want an open error", c.RefreshToken, err)
	} else if !errors.Is(err, sealing.ErrOpen) {
		t.Errorf("Get(bob) error %v does not wrap sealing.ErrOpen", err)
	}

	alice["AccessTokenSealed"], alice["RefreshTokenSealed"] = alice["RefreshTokenSealed"], alice["AccessTokenSealed"]
	put(alice)
	if c, err := f.store.Get(ctx, "alice"); !errors.Is(err, sealing.ErrOpen) {
		t.Errorf("Get(alice) with swapped token columns = (%q, %q), %v; want sealing.ErrOpen", c.AccessToken, c.RefreshToken, err)
	}

	// A PKCE verifier is bound to its state entry too.
	ids := []string{storetest.PendingID("state-1"), storetest.PendingID("state-2")}
	for _, id := range ids {
		p := connection.Pending{Kind: connection.PendingState, ID: id, UserID: "alice", Verifier: "verifier-" + id, ExpiresAt: time.Now().Add(time.Hour)}
		if err := f.store.PutPending(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	rawPending := func(id string) map[string]any {
		resp, err := f.pending.GetEntity(ctx, id, "state", nil)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		if err := json.Unmarshal(resp.Value, &e); err != nil {
			t.Fatal(err)
		}
		return plainProps(e)
	}
	victim := rawPending(ids[1])
	victim["VerifierSealed"] = rawPending(ids[0])["VerifierSealed"]
	b, _ := json.Marshal(victim)
	if _, err := f.pending.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		t.Fatal(err)
	}
	if p, err := f.store.GetPending(ctx, connection.PendingState, ids[1]); !errors.Is(err, sealing.ErrOpen) {
		t.Errorf("GetPending with another state's sealed verifier = verifier ok %t, %v; want sealing.ErrOpen", p.Verifier != "", err)
	}

	// A pending connect's tokens are bound to its entry: M's sealed
	// result copied into V's pending connect does not open.
	codes := []string{storetest.PendingID("code-m"), storetest.PendingID("code-v")}
	for _, id := range codes {
		p := connection.Pending{Kind: connection.PendingConnect, ID: id, UserID: "u" + id[:4], ExpiresAt: time.Now().Add(time.Hour),
			Grant: connection.Grant{AccessToken: "at-" + id, RefreshToken: "rt-" + id}}
		if err := f.store.PutPending(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	rawConnect := func(id string) map[string]any {
		resp, err := f.pending.GetEntity(ctx, id, "connect", nil)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		if err := json.Unmarshal(resp.Value, &e); err != nil {
			t.Fatal(err)
		}
		return plainProps(e)
	}
	v := rawConnect(codes[1])
	v["RefreshTokenSealed"] = rawConnect(codes[0])["RefreshTokenSealed"]
	b, _ = json.Marshal(v)
	if _, err := f.pending.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		t.Fatal(err)
	}
	if p, err := f.store.GetPending(ctx, connection.PendingConnect, codes[1]); !errors.Is(err, sealing.ErrOpen) {
		t.Errorf("GetPending with another connect's sealed refresh token = token ok %t, %v; want sealing.ErrOpen", p.Grant.RefreshToken != "", err)
	}
}

// recordQueries keeps the query string of every entity query.
type recordQueries struct {
	mu      sync.Mutex
	queries []url.Values
}

func (r *recordQueries) Do(req *policy.Request) (*http.Response, error) {
	if req.Raw().Method == http.MethodGet {
		r.mu.Lock()
		r.queries = append(r.queries, req.Raw().URL.Query())
		r.mu.Unlock()
	}
	return req.Next()
}

func TestListFetchesNoSealedColumns(t *testing.T) {
	rec := &recordQueries{}
	svc, err := aztables.NewServiceClientFromConnectionString(azurite.ForTest(t), &aztables.ClientOptions{
		ClientOptions: azcore.ClientOptions{PerCallPolicies: []policy.Policy{rec}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sealer := &countingSealer{Sealer: sealing.New(newKeyring("k1"))}
	s := tablestore.New(svc, sealer, tablestore.Options{ConnectionsTable: uniqueTable(t, svc, "conn"), PendingTable: uniqueTable(t, svc, "sess"), Now: time.Now})
	for i := range 5 {
		if _, err := s.Create(t.Context(), connection.Connection{UserID: fmt.Sprint(i), Status: connection.StatusConnected, AccessToken: "at", RefreshToken: "rt"}); err != nil {
			t.Fatal(err)
		}
	}
	rec.mu.Lock()
	rec.queries = nil
	rec.mu.Unlock()
	page, err := s.List(t.Context(), connection.ListQuery{Limit: 2})
	if err != nil || len(page.Connections) != 2 {
		t.Fatalf("List = %d, %v", len(page.Connections), err)
	}
	if n := sealer.opens.Load(); n != 0 {
		t.Errorf("List opened %d sealed values, want 0", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.queries) == 0 {
		t.Fatal("no query recorded")
	}
	for _, q := range rec.queries {
		sel := strings.Split(q.Get("$select"), ",")
		for _, col := range []string{"UserID", "Status", "Email", "AccessTokenExpiresAt", "LastErrorAt"} {
			if !slices.Contains(sel, col) {
				t.Errorf("$select %q lacks %s", q.Get("$select"), col)
			}
		}
		for _, col := range sel {
			if strings.HasSuffix(col, "Sealed") || col == "" {
				t.Errorf("$select %q fetches %q", q.Get("$select"), col)
			}
		}
		if q.Get("$top") != "2" {
			t.Errorf("$top = %q, want the page's limit 2", q.Get("$top"))
		}
	}
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	ctx := t.Context()
	old, err := f.store.Create(ctx, connection.Connection{UserID: "old", Status: connection.StatusConnected, RefreshToken: "rt-old"})
	if err != nil {
		t.Fatal(err)
	}
	f.keys.rotate("k2")
	if _, err := f.store.Create(ctx, connection.Connection{UserID: "new", Status: connection.StatusConnected, RefreshToken: "rt-new"}); err != nil {
		t.Fatal(err)
	}
	version := func(pk string) any {
		resp, err := f.conns.GetEntity(ctx, pk, "microsoft", nil)
		if err != nil {
			t.Fatal(err)
		}
		var e map[string]any
		json.Unmarshal(resp.Value, &e)
		return e["KeyVersion"]
	}
	if v := version("old"); v != "k1" {
		t.Errorf("row sealed before the rotation: KeyVersion %v, want k1", v)
	}
	if v := version("new"); v != "k2" {
		t.Errorf("row sealed after the rotation: KeyVersion %v, want k2", v)
	}
	// A row on the old key still opens, and an update moves it to the new.
	got, err := f.store.Get(ctx, "old")
	if err != nil || got.RefreshToken != "rt-old" {
		t.Fatalf("Get(old) after rotation = %q, %v", got.RefreshToken, err)
	}
	if _, err := f.store.Update(ctx, old); err != nil {
		t.Fatal(err)
	}
	if v := version("old"); v != "k2" {
		t.Errorf("row updated after the rotation: KeyVersion %v, want k2", v)
	}
}

func TestSealFailureStoresNothing(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	s := tablestore.New(f.svc, failingSealer{}, f.opts)
	_, err := s.Create(t.Context(), connection.Connection{UserID: "42", Status: connection.StatusConnected, RefreshToken: "rt"})
	if !errors.Is(err, errSealerDown) {
		t.Fatalf("Create with a failing sealer = %v, want it to wrap the sealer's error", err)
	}
	if _, err := f.store.Get(t.Context(), "42"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("Get after the failed Create = %v, want ErrNotFound", err)
	}
	err = s.PutPending(t.Context(), connection.Pending{Kind: connection.PendingState, ID: storetest.PendingID("x"), UserID: "42", Verifier: "v", ExpiresAt: time.Now().Add(time.Minute)})
	if !errors.Is(err, errSealerDown) {
		t.Errorf("PutPending with a failing sealer = %v", err)
	}
}

func TestNowStampsMissingTimes(t *testing.T) {
	now := time.Date(2026, 11, 25, 23, 40, 0, 0, time.UTC)
	f := newFixture(t, tablestore.Options{Now: func() time.Time { return now }})
	if _, err := f.store.Create(t.Context(), connection.Connection{UserID: "42", Status: connection.StatusConnected}); err != nil {
		t.Fatal(err)
	}
	c, err := f.store.Get(t.Context(), "42")
	if err != nil || !c.ConnectedAt.Equal(now) {
		t.Errorf("ConnectedAt = %v, %v; want %v", c.ConnectedAt, err, now)
	}
	id := storetest.PendingID("x")
	if err := f.store.PutPending(t.Context(), connection.Pending{Kind: connection.PendingSession, ID: id, UserID: "42", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p, err := f.store.GetPending(t.Context(), connection.PendingSession, id)
	if err != nil || !p.CreatedAt.Equal(now) {
		t.Errorf("CreatedAt = %v, %v; want %v", p.CreatedAt, err, now)
	}
}

func tableExists(t *testing.T, svc *aztables.ServiceClient, name string) bool {
	t.Helper()
	filter := "TableName eq '" + name + "'"
	page, err := svc.NewListTablesPager(&aztables.ListTablesOptions{Filter: &filter}).NextPage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(page.Tables) == 1
}

func TestTablesAreCreatedLazilyOnce(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	if tableExists(t, f.svc, f.opts.ConnectionsTable) {
		t.Fatal("New created tables: it must do no I/O")
	}
	// Many first calls at once: all succeed, whoever creates the tables.
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := f.store.Get(context.Background(), fmt.Sprint(i))
			if errors.Is(err, connection.ErrNotFound) {
				err = nil
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent first Get: %v", err)
		}
	}
	if !tableExists(t, f.svc, f.opts.ConnectionsTable) || !tableExists(t, f.svc, f.opts.PendingTable) {
		t.Error("tables missing after the first use")
	}
	// Another instance finds them existing.
	other := tablestore.New(f.svc, f.sealer, f.opts)
	if err := other.EnsureTables(t.Context()); err != nil {
		t.Errorf("EnsureTables on existing tables: %v", err)
	}
}

func TestDefaultTableNames(t *testing.T) {
	svc := serviceClient(t)
	s := tablestore.New(svc, sealing.New(newKeyring("k1")), tablestore.Options{Now: time.Now})
	if err := s.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"connections", "connectsessions"} {
		if !tableExists(t, svc, name) {
			t.Errorf("table %s not created", name)
		}
	}
}

// A table deleted under a running store is an outage, not "not connected".
func TestMissingTableIsNotNotFound(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	if err := f.store.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.DeleteTable(t.Context(), f.opts.ConnectionsTable, nil); err != nil {
		t.Fatal(err)
	}
	_, err := f.store.Get(t.Context(), "42")
	if err == nil || errors.Is(err, connection.ErrNotFound) {
		t.Errorf("Get with the table gone = %v; want an error that is not ErrNotFound", err)
	}
}

func TestDeleteExpiredPages(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	tablestore.SetPageSize(f.store, 3)
	now := time.Now()
	for i := range 11 {
		exp := now.Add(-time.Minute)
		if i%4 == 0 {
			exp = now.Add(time.Minute)
		}
		p := connection.Pending{Kind: connection.PendingSession, ID: storetest.PendingID(fmt.Sprint(i)), UserID: "42", ExpiresAt: exp}
		if err := f.store.PutPending(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	n, err := f.store.DeleteExpired(t.Context(), now)
	if err != nil || n != 8 {
		t.Errorf("DeleteExpired = %d, %v; want 8 across pages of 3", n, err)
	}
	if left := len(rawEntities(t, f.pending)); left != 3 {
		t.Errorf("%d entries left, want 3", left)
	}
}

// capTop lowers $top on every query, as the service does when it answers a
// request with fewer rows than asked plus a continuation (partition
// boundaries, the 5-second query limit). Azurite never does on its own.
type capTop struct {
	max     int
	queries atomic.Int64
}

func (c *capTop) Do(req *policy.Request) (*http.Response, error) {
	q := req.Raw().URL.Query()
	if top := q.Get("$top"); top != "" {
		c.queries.Add(1)
		if n, _ := strconv.Atoi(top); n > c.max {
			q.Set("$top", strconv.Itoa(c.max))
			req.Raw().URL.RawQuery = q.Encode()
		}
	}
	return req.Next()
}

func TestListFillsPagesFromShortServicePages(t *testing.T) {
	short := &capTop{max: 2}
	svc, err := aztables.NewServiceClientFromConnectionString(azurite.ForTest(t), &aztables.ClientOptions{
		ClientOptions: azcore.ClientOptions{PerCallPolicies: []policy.Policy{short}},
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := tablestore.Options{ConnectionsTable: uniqueTable(t, svc, "conn"), PendingTable: uniqueTable(t, svc, "sess"), Now: time.Now}
	s := tablestore.New(svc, sealing.New(newKeyring("k1")), opts)
	want := map[string]bool{}
	for i := range 30 {
		status := connection.StatusConnected
		if i%3 == 0 {
			status = connection.StatusReconnectRequired
			want[fmt.Sprintf("u%02d", i)] = true
		}
		if _, err := s.Create(t.Context(), connection.Connection{UserID: fmt.Sprintf("u%02d", i), Status: status}); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	seen := map[string]int{}
	cursor := ""
	for {
		p, err := s.List(t.Context(), connection.ListQuery{Status: connection.StatusReconnectRequired, Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Connections))
		for _, c := range p.Connections {
			seen[c.UserID]++
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	// 10 matches: full pages of 4 although each answer holds at most 2.
	if len(sizes) < 3 || sizes[0] != 4 || sizes[1] != 4 || sizes[2] != 2 || slices.ContainsFunc(sizes[3:], func(n int) bool { return n != 0 }) {
		t.Errorf("page sizes %v, want [4 4 2] (and at most an empty last page)", sizes)
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("%s listed %d times, want 1", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("listed %d connections, want %d", len(seen), len(want))
	}
	if q := short.queries.Load(); q < 5 {
		t.Errorf("%d service queries for 10 rows at 2 per answer: List did not follow continuations", q)
	}
}

// The partition key is the user_id column; a row where they disagree
// (edited by hand, written by another program, or a v1 row under its
// escaped key: "a/b" was stored as "a~2Fb", now a valid id of its own) is
// refused rather than served under either name.
func TestRowWithMismatchedUserIDIsRefused(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	if err := f.store.EnsureTables(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"PartitionKey": "alice", "RowKey": "microsoft", "UserID": "mallory", "Status": "connected"})
	if _, err := f.conns.AddEntity(t.Context(), b, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := f.store.Get(t.Context(), "alice"); err == nil || errors.Is(err, connection.ErrNotFound) {
		t.Errorf("Get(alice) of a row naming mallory = %v, %v; want an error", c, err)
	}
	if p, err := f.store.List(t.Context(), connection.ListQuery{Limit: 10}); err == nil {
		t.Errorf("List with a row naming mallory under alice's key = %v, want an error", p.Connections)
	}
	b, _ = json.Marshal(map[string]any{"PartitionKey": "a~2Fb", "RowKey": "microsoft", "UserID": "a/b", "Status": "connected"})
	if _, err := f.conns.AddEntity(t.Context(), b, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := f.store.Get(t.Context(), "a~2Fb"); err == nil || errors.Is(err, connection.ErrNotFound) {
		t.Errorf("Get(a~2Fb) of v1's row of a/b = %v, %v; want an error", c, err)
	}
}

// failFirst fails the first n requests before they reach the service, as
// an unreachable Storage account at start-up would.
type failFirst struct{ n atomic.Int64 }

var errUnreachable = errors.New("dial tcp: connection refused")

func (f *failFirst) Do(req *policy.Request) (*http.Response, error) {
	if f.n.Add(-1) >= 0 {
		return nil, errUnreachable
	}
	return req.Next()
}

// A failed table creation is not remembered: the next call tries again.
func TestEnsureTablesRetriesAfterAFailure(t *testing.T) {
	fail := &failFirst{}
	fail.n.Store(1)
	svc, err := aztables.NewServiceClientFromConnectionString(azurite.ForTest(t), &aztables.ClientOptions{
		ClientOptions: azcore.ClientOptions{PerCallPolicies: []policy.Policy{fail}, Retry: policy.RetryOptions{MaxRetries: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := tablestore.New(svc, sealing.New(newKeyring("k1")), tablestore.Options{ConnectionsTable: uniqueTable(t, svc, "conn"), PendingTable: uniqueTable(t, svc, "sess"), Now: time.Now})
	if _, err := s.Get(t.Context(), "42"); !errors.Is(err, errUnreachable) {
		t.Fatalf("first Get = %v, want the creation failure", err)
	}
	if _, err := s.Get(t.Context(), "42"); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("second Get = %v, want ErrNotFound once the tables could be created", err)
	}
}

// The clock is required at construction: a Store without one would stamp
// rows with whatever a nil-fallback picked, so New refuses it outright.
func TestNewRequiresAClock(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Options.Now") {
			t.Errorf("New without Now: recover() = %v, want a panic naming Options.Now", r)
		}
	}()
	tablestore.New(serviceClient(t), sealing.New(newKeyring("k1")), tablestore.Options{})
}
