package sweep

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

// The sweep counts every listed connection by status and by missing scope
// (across pages) and records that with its summary for diagnostics.
func TestSweepRecordsCountsForDiagnostics(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 9, 6, 4) // scopes: none stored
	required := []string{"User.Read", "Files.ReadWrite.All", "offline_access"}
	add := func(id string, scopes []string) {
		c := connection.Connection{UserID: id, Status: connection.StatusConnected, Scopes: scopes, AccessToken: "at", RefreshToken: "rt",
			ConnectedAt: t0, LastRefreshedAt: t0, AccessTokenExpiresAt: t0.Add(time.Hour)}
		if _, err := store.Create(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	add("full-grant", []string{"User.Read", "Files.ReadWrite.All", "offline_access"})
	// As Microsoft may report them: resource-prefixed, other case, no
	// offline_access (a stored connection has a refresh token).
	add("full-grant-long-form", []string{"https://graph.microsoft.com/user.read", "https://graph.microsoft.com/Files.ReadWrite.All"})
	add("no-files", []string{"User.Read", "offline_access"})

	var got []connection.SweepRecord
	sw := newSweeper(store, &fakeTokens{seen: map[string]int{}}, func() time.Time { return t0 })
	sw.RequiredScopes = required
	sw.Record = func(_ context.Context, r connection.SweepRecord) error {
		got = append(got, r)
		return nil
	}
	sum, err := sw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("Record called %d times, want once", len(got))
	}
	r := got[0]
	if r.Connections[connection.StatusConnected] != 18 || r.Connections[connection.StatusReconnectRequired] != 4 {
		t.Errorf("counts = %v, want 18 connected, 4 reconnect_required", r.Connections)
	}
	// The 19 seeded without scopes and no-files lack one.
	if r.MissingScope != 20 {
		t.Errorf("missing scope = %d, want 20", r.MissingScope)
	}
	if r.Due != sum.Due || r.Refreshed != sum.Refreshed || r.Due != 9 || !r.FinishedAt.Equal(t0) || r.StoppedBy != "" {
		t.Errorf("record = %+v, summary %+v", r, sum)
	}

	// A failed record is logged, never fatal: the sweep did its work.
	sw.Record = func(context.Context, connection.SweepRecord) error { return errors.New("storage down") }
	if _, err := sw.Run(context.Background()); err != nil {
		t.Errorf("a failed record failed the sweep: %v", err)
	}
}

func TestMissingScopes(t *testing.T) {
	req := []string{"User.Read", "Files.ReadWrite.All", "offline_access"}
	for _, tc := range []struct {
		granted []string
		want    int
	}{
		{[]string{"User.Read", "Files.ReadWrite.All", "offline_access"}, 0},
		{[]string{"user.read", "files.readwrite.all"}, 0},
		{[]string{"User.Read"}, 1},
		{nil, 2},
	} {
		if got := connection.MissingScopes(tc.granted, req); len(got) != tc.want {
			t.Errorf("MissingScopes(%v) = %v, want %d missing", tc.granted, got, tc.want)
		}
	}
}

// listFails is a store whose listing fails.
type listFails struct{ *memstore.Store }

func (listFails) List(context.Context, connection.ListQuery) (connection.Page, error) {
	return connection.Page{}, errors.New("table service unreachable")
}

func TestSweepWhoseListingFailedIsNotRecorded(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	sw := newSweeper(store, &fakeTokens{seen: map[string]int{}}, func() time.Time { return t0 })
	sw.Store = listFails{store}
	recorded := 0
	sw.Record = func(context.Context, connection.SweepRecord) error { recorded++; return nil }
	if _, err := sw.Run(context.Background()); err == nil {
		t.Fatal("a failed listing returned no error")
	}
	if recorded != 0 {
		t.Errorf("a sweep that could not list was recorded %d times", recorded)
	}
}
