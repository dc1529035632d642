package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/memstore"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// fakeTokens counts refreshes and tracks how many run at once.
type fakeTokens struct {
	mu       sync.Mutex
	seen     map[string]int
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	hold     time.Duration
	outcome  func(userID string) (tokens.Outcome, error)
}

func (f *fakeTokens) RefreshIfDue(ctx context.Context, userID string) (tokens.Outcome, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	f.seen[userID]++
	f.mu.Unlock()
	time.Sleep(f.hold)
	if f.outcome != nil {
		return f.outcome(userID)
	}
	return tokens.Refreshed, nil
}

func seed(t *testing.T, store *memstore.Store, due, fresh, dead int) {
	t.Helper()
	add := func(id string, c connection.Connection) {
		c.UserID, c.AccessToken, c.RefreshToken, c.ConnectedAt = id, "at", "rt", t0.Add(-48*time.Hour)
		if _, err := store.Create(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < due; i++ { // not refreshed for longer than MaxAge
		add(fmt.Sprintf("due-%04d", i), connection.Connection{Status: connection.StatusConnected, LastRefreshedAt: t0.Add(-25 * time.Hour), AccessTokenExpiresAt: t0.Add(time.Hour)})
	}
	for i := 0; i < fresh; i++ {
		add(fmt.Sprintf("fresh-%04d", i), connection.Connection{Status: connection.StatusConnected, LastRefreshedAt: t0.Add(-time.Hour), AccessTokenExpiresAt: t0.Add(time.Hour)})
	}
	for i := 0; i < dead; i++ { // never refreshed, however old
		add(fmt.Sprintf("dead-%04d", i), connection.Connection{Status: connection.StatusReconnectRequired, LastRefreshedAt: t0.Add(-100 * 24 * time.Hour)})
	}
}

func newSweeper(store *memstore.Store, ft *fakeTokens, now func() time.Time) *Sweeper {
	return &Sweeper{Store: store, Pending: store, Tokens: ft, Policy: connection.DefaultPolicy(),
		Concurrency: 4, PageSize: 7, Log: zerolog.Nop(), Now: now}
}

func TestSweepRefreshesEveryDueConnectionOnce(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 50, 20, 5)
	ft := &fakeTokens{seen: map[string]int{}, hold: time.Millisecond}
	sum, err := newSweeper(store, ft, func() time.Time { return t0 }).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Due != 50 || sum.Refreshed != 50 || sum.ConnectionsTotal != 75 || sum.Skipped != 0 || sum.StoppedBy != "" {
		t.Errorf("summary = %+v", sum)
	}
	for id, n := range ft.seen {
		if n != 1 || id[:3] != "due" {
			t.Errorf("%s refreshed %d times", id, n)
		}
	}
	if m := ft.maxSeen.Load(); m > 4 {
		t.Errorf("%d refreshes ran at once, want at most the concurrency 4", m)
	}
}

func TestSweepStopsStartingWorkAtTheDeadline(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 40, 0, 0)
	var calls atomic.Int64
	start := t0
	// Each refresh moves the clock a minute; the deadline is 10 minutes.
	ft := &fakeTokens{seen: map[string]int{}, outcome: func(string) (tokens.Outcome, error) { calls.Add(1); return tokens.Refreshed, nil }}
	sw := newSweeper(store, ft, func() time.Time { return start.Add(time.Duration(calls.Load()) * time.Minute) })
	sw.Concurrency = 1
	sw.Deadline = 10 * time.Minute
	sum, err := sw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Refreshed < 9 || sum.Refreshed > 11 || sum.Refreshed+sum.Skipped != sum.Due {
		t.Errorf("summary = %+v: want about 10 refreshed and the rest skipped", sum)
	}
}

func TestSweepStopsAfterAConfigurationError(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 30, 0, 0)
	ft := &fakeTokens{seen: map[string]int{}, outcome: func(string) (tokens.Outcome, error) {
		return tokens.ConfigurationFailure, errors.New("invalid_client")
	}}
	sw := newSweeper(store, ft, func() time.Time { return t0 })
	sw.Concurrency = 1
	sum, err := sw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(ft.seen); n > 2 {
		t.Errorf("%d refreshes attempted after a configuration error, want the sweep to stop", n)
	}
	// The listing stops with the workers: due counts what was listed.
	if sum.StoppedBy != "configuration" || sum.Refreshed != 0 || sum.TransientFailures+sum.Skipped != sum.Due || sum.Skipped == 0 {
		t.Errorf("summary = %+v", sum)
	}
}

func TestSweepDeletesExpiredSessions(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	ctx := context.Background()
	for i, exp := range []time.Time{t0.Add(-time.Minute), t0.Add(time.Minute)} {
		id := fmt.Sprintf("%064x", i+1)
		if err := store.PutPending(ctx, connection.Pending{Kind: connection.PendingSession, ID: id, UserID: "u", ReturnURL: "https://x/", CreatedAt: t0.Add(-time.Hour), ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := newSweeper(store, &fakeTokens{seen: map[string]int{}}, func() time.Time { return t0 }).Run(ctx)
	if err != nil || sum.SessionsDeleted != 1 {
		t.Errorf("sessions deleted = %d (%v), want 1", sum.SessionsDeleted, err)
	}
	if _, err := store.GetPending(ctx, connection.PendingSession, fmt.Sprintf("%064x", 2)); err != nil {
		t.Errorf("the live session was deleted: %v", err)
	}
}

// A signed-in result nobody completed goes with the same clean-up: its
// sealed tokens do not outlive the code's 10 minutes by more than a sweep.
func TestSweepDeletesExpiredPendingConnects(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	ctx := context.Background()
	for i, exp := range []time.Time{t0.Add(-time.Second), t0.Add(time.Minute)} {
		p := connection.Pending{Kind: connection.PendingConnect, ID: fmt.Sprintf("%064x", i+1), UserID: "u",
			Grant:     connection.Grant{AccessToken: "at", RefreshToken: "rt", ExpiresAt: t0.Add(time.Hour)},
			CreatedAt: exp.Add(-10 * time.Minute), ExpiresAt: exp}
		if err := store.PutPending(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := newSweeper(store, &fakeTokens{seen: map[string]int{}}, func() time.Time { return t0 }).Run(ctx)
	if err != nil || sum.SessionsDeleted != 1 {
		t.Errorf("pending entries deleted = %d (%v), want 1", sum.SessionsDeleted, err)
	}
	if _, err := store.GetPending(ctx, connection.PendingConnect, fmt.Sprintf("%064x", 1)); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("the expired pending connect survived the sweep: %v", err)
	}
	if _, err := store.GetPending(ctx, connection.PendingConnect, fmt.Sprintf("%064x", 2)); err != nil {
		t.Errorf("the live pending connect was deleted: %v", err)
	}
}

func TestSweepSkipsAPausedConnection(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 3, 0, 0)
	// due-0001 met AADSTS50196 on some instance: its row says until when.
	c, err := store.Get(context.Background(), "due-0001")
	if err != nil {
		t.Fatal(err)
	}
	c.ThrottledUntil = t0.Add(30 * time.Second)
	if _, err := store.Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	ft := &fakeTokens{seen: map[string]int{}}
	sum, err := newSweeper(store, ft, func() time.Time { return t0 }).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Due != 3 || sum.Refreshed != 2 || sum.Skipped != 1 || sum.TransientFailures != 0 {
		t.Errorf("summary = %+v, want 3 due, 2 refreshed, 1 skipped", sum)
	}
	if ft.seen["due-0001"] != 0 {
		t.Error("the paused connection was handed to the token service")
	}

	// Once the pause is over it is refreshed like any other.
	ft = &fakeTokens{seen: map[string]int{}}
	sum, err = newSweeper(store, ft, func() time.Time { return t0.Add(31 * time.Second) }).Run(context.Background())
	if err != nil || sum.Refreshed != 3 || ft.seen["due-0001"] != 1 {
		t.Errorf("after the pause: %+v, %v, seen %v", sum, err, ft.seen)
	}
}

// The deadline is read on the injected clock: a sweep whose clock passes
// the deadline stops and says so, with no wall time passing at all (a
// wall-clock timer would never fire in this test).
func TestSweepDeadlineIsOnTheInjectedClock(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 40, 0, 0)
	clock := clocktest.New(t0)
	ft := &fakeTokens{seen: map[string]int{}, outcome: func(string) (tokens.Outcome, error) {
		clock.Advance(time.Minute)
		return tokens.Refreshed, nil
	}}
	sw := newSweeper(store, ft, clock.Now)
	sw.Concurrency = 1
	sw.Deadline = 10 * time.Minute
	sum, err := sw.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.StoppedBy != "deadline" || sum.Refreshed != 10 || sum.Refreshed+sum.Skipped != sum.Due {
		t.Errorf("summary = %+v: want stopped_by deadline after 10 refreshes", sum)
	}
	if sum.DurationMS != (10 * time.Minute).Milliseconds() {
		t.Errorf("duration_ms = %d, want the clock's 10 minutes", sum.DurationMS)
	}
}

// A configuration failure stops the sweep with a cause that still wraps the
// token service's error (%w, not %v), so errors.Is finds both.
func TestSweepConfigurationStopWrapsTheCause(t *testing.T) {
	invalidClient := errors.New("invalid_client")
	ft := &fakeTokens{seen: map[string]int{}, outcome: func(string) (tokens.Outcome, error) {
		return tokens.ConfigurationFailure, invalidClient
	}}
	sw := newSweeper(memstore.New(memstore.Options{Now: time.Now}), ft, func() time.Time { return t0 })
	r := &run{s: sw, deadline: t0.Add(time.Hour)}
	r.ctx, r.stop = context.WithCancelCause(context.Background())
	in := make(chan string, 1)
	in <- "u1"
	close(in)
	r.work(in)
	cause := context.Cause(r.ctx)
	if !errors.Is(cause, errConfiguration) || !errors.Is(cause, invalidClient) {
		t.Errorf("stop cause = %v: want it to wrap errConfiguration and the token service's error", cause)
	}
}

// The refresh_swept line carries the counts by status (and those missing a
// required scope) as listed: the workbook's "connections by status" chart
// reads them (infra/queries/workbook-connections.kql).
func TestSweptLineCountsByStatus(t *testing.T) {
	store := memstore.New(memstore.Options{Now: time.Now})
	seed(t, store, 3, 2, 4)
	var logs bytes.Buffer
	s := newSweeper(store, &fakeTokens{seen: map[string]int{}}, func() time.Time { return t0 })
	s.Log = zerolog.New(&logs)
	s.RequiredScopes = []string{"Files.ReadWrite.All"}
	if _, err := s.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["event"] == "refresh_swept" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no refresh_swept line:\n%s", logs.String())
	}
	for field, want := range map[string]float64{
		"connections_total": 9, "connections_connected": 5, "connections_reconnect_required": 4, "connections_missing_scope": 9,
	} {
		if got, ok := line[field].(float64); !ok || got != want {
			t.Errorf("refresh_swept %s = %v, want %v", field, line[field], want)
		}
	}
}
