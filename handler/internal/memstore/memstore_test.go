package memstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/memstore"
	"github.com/megdocs/msconnector/handler/internal/tablestore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (connection.Store, connection.PendingStore) {
		s := memstore.New(memstore.Options{Now: time.Now})
		return s, s
	})
}

func TestNowStampsMissingTimes(t *testing.T) {
	now := time.Date(2026, 11, 25, 23, 40, 0, 0, time.UTC)
	s := memstore.New(memstore.Options{Now: func() time.Time { return now }})
	if _, err := s.Create(t.Context(), connection.Connection{UserID: "42", Status: connection.StatusConnected}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Get(t.Context(), "42")
	if err != nil {
		t.Fatal(err)
	}
	if !c.ConnectedAt.Equal(now) {
		t.Errorf("ConnectedAt = %v, want %v", c.ConnectedAt, now)
	}
	id := storetest.PendingID("x")
	if err := s.PutPending(t.Context(), connection.Pending{Kind: connection.PendingSession, ID: id, UserID: "42", ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	p, err := s.GetPending(t.Context(), connection.PendingSession, id)
	if err != nil {
		t.Fatal(err)
	}
	if !p.CreatedAt.Equal(now) {
		t.Errorf("CreatedAt = %v, want %v", p.CreatedAt, now)
	}
}

// The store keeps what Table Storage keeps, so a service test cannot rely
// on more: UTC, 100 ns.
func TestTimesAtStoragePrecision(t *testing.T) {
	s := memstore.New(memstore.Options{Now: time.Now})
	at := time.Date(2026, 11, 25, 23, 40, 0, 123456789, time.FixedZone("CET", 3600))
	if _, err := s.Create(t.Context(), connection.Connection{UserID: "42", Status: connection.StatusConnected, AccessTokenExpiresAt: at}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Get(t.Context(), "42")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 11, 25, 22, 40, 0, 123456700, time.UTC)
	if got := c.AccessTokenExpiresAt; !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("AccessTokenExpiresAt = %v, want %v", got, want)
	}
}

// Returned values share nothing with the store.
func TestNoAliasing(t *testing.T) {
	s := memstore.New(memstore.Options{Now: time.Now})
	in := connection.Connection{UserID: "42", Status: connection.StatusConnected, Scopes: []string{"a", "b"},
		LastError: &connection.LastError{Code: "x"}}
	if _, err := s.Create(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	in.Scopes[0] = "changed-by-caller"
	in.LastError.Code = "changed-by-caller"
	got, _ := s.Get(t.Context(), "42")
	got.Scopes[1] = "changed-by-reader"
	got.LastError.Code = "changed-by-reader"
	again, _ := s.Get(t.Context(), "42")
	if again.Scopes[0] != "a" || again.Scopes[1] != "b" || again.LastError.Code != "x" {
		t.Errorf("stored state changed through a caller's slice or pointer: %v %v", again.Scopes, *again.LastError)
	}
}

// The fake does not choose a clock of its own, like tablestore.
func TestNowIsRequired(t *testing.T) {
	defer func() {
		if r, _ := recover().(string); !strings.Contains(r, "Options.Now is required") {
			t.Errorf("New without Now: recover() = %q, want a panic naming Options.Now", r)
		}
	}()
	memstore.New(memstore.Options{})
}
