package tokens

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// blockingUpdates holds every Update until its context ends, and counts.
type blockingUpdates struct {
	connection.Store
	entered chan struct{}
	ended   chan error
}

func (b *blockingUpdates) Update(ctx context.Context, c connection.Connection) (connection.Connection, error) {
	b.entered <- struct{}{}
	<-ctx.Done()
	b.ended <- ctx.Err()
	return connection.Connection{}, ctx.Err()
}

// Close cancels a usage write at once, returns only after it ended, and no
// usage write starts after it.
func TestCloseCancelsAndWaitsForUsageWrites(t *testing.T) {
	f := newFixture(t, time.Hour)
	st := &blockingUpdates{Store: f.store, entered: make(chan struct{}, 2), ended: make(chan error, 2)}
	f.svc.Store = st
	f.now = t0.Add(connection.UsageGranularity + time.Minute)
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	<-st.entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.svc.Close(ctx); err != nil {
		t.Fatalf("Close = %v, want the usage write cancelled and waited for", err)
	}
	select {
	case err := <-st.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the usage write ended with %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Close returned while the usage write was still running")
	}
	f.now = f.now.Add(2 * connection.UsageGranularity)
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	f.svc.Wait()
	if len(st.entered) != 0 {
		t.Error("a usage write started after Close")
	}
}

// gatedRefresher holds Refresh until released or its context ends.
type gatedRefresher struct {
	entered chan struct{}
	release chan struct{}
	ended   chan error
}

func (g *gatedRefresher) Refresh(ctx context.Context, _ string) (connection.Grant, error) {
	g.entered <- struct{}{}
	select {
	case <-g.release:
		g.ended <- nil
		return connection.Grant{AccessToken: "at-new", RefreshToken: "rt-new", ExpiresAt: t0.Add(time.Hour)}, nil
	case <-ctx.Done():
		g.ended <- ctx.Err()
		return connection.Grant{}, ctx.Err()
	}
}

func newGated() *gatedRefresher {
	return &gatedRefresher{entered: make(chan struct{}, 1), release: make(chan struct{}), ended: make(chan error, 1)}
}

// A shared refresh in flight is waited for, even after its caller left,
// so what Microsoft answered is stored; then refreshes fail fast.
func TestCloseWaitsForARefreshInFlight(t *testing.T) {
	f := newFixture(t, time.Minute) // due
	g := newGated()
	f.svc.Refresher = g
	caller, leave := context.WithCancel(context.Background())
	go func() { _, _ = f.svc.Token(caller, "u1") }()
	<-g.entered
	leave() // the caller hangs up: the flight goes on

	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- f.svc.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Fatalf("Close = %v before the refresh ended", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if c := f.get(t); c.RefreshToken != "rt-new" {
		t.Errorf("refresh token = %q, want the rotated one stored before Close returned", c.RefreshToken)
	}
	// Another user: a caller arriving as u1's flight ends may still share
	// its result, which was computed before Close.
	if _, err := f.svc.RefreshIfDue(context.Background(), "u2"); !errors.Is(err, errClosed) {
		t.Errorf("a refresh after Close = %v, want errClosed", err)
	}
}

// Close's bound holds: a refresh that outlives it is cancelled, and Close
// says so.
func TestCloseCancelsWhatOutlivesItsBound(t *testing.T) {
	f := newFixture(t, time.Minute)
	g := newGated()
	f.svc.Refresher = g
	go func() { _, _ = f.svc.Token(context.Background(), "u1") }()
	<-g.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.svc.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want its bound's error", err)
	}
	select {
	case err := <-g.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the refresh ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the refresh was not cancelled when Close's bound ran out")
	}
}

// The Service does not fall back to a clock of its own.
func TestNowIsRequired(t *testing.T) {
	f := newFixture(t, time.Hour)
	f.svc.Now = nil
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "Now is required") {
			t.Errorf("recovered %v, want a panic naming Now", r)
		}
	}()
	_, _ = f.svc.Token(context.Background(), "u1")
}
