package faulttest

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

const connectionsTable = "connections"

var (
	entityReads   = Entity(connectionsTable, http.MethodGet)
	entityUpdates = Entity(connectionsTable, http.MethodPut)
)

func serverBusy() Fault {
	return tableError(http.StatusServiceUnavailable, "ServerBusy", "The server is busy.")
}

// A refresh's conditional write loses the race (412): the token service
// re-reads, and either re-applies its grant (only bookkeeping changed) or
// adopts the newer tokens another instance stored. A rotated refresh token
// is never dropped.
func TestTableConflictsOnTheRefreshWrite(t *testing.T) {
	t.Parallel()
	s := start(t, options{accounts: 7})
	conns := s.seed(t, 0, 4)
	ctx := context.Background()
	// Each case refreshes once at Microsoft: the token that refresh rotated
	// is the one stored (a second refresh would hide a dropped one).
	refreshes := func(t *testing.T, want int, call func()) {
		t.Helper()
		before := s.idp.TokenRequests("refresh_token")
		call()
		if got := s.idp.TokenRequests("refresh_token") - before; got != want {
			t.Errorf("%d refreshes at Microsoft, want %d", got, want)
		}
	}

	t.Run("412 injected on the update", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[0]
		conflict := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1,
			Fault: tableError(http.StatusPreconditionFailed, "UpdateConditionNotSatisfied", "The update condition specified in the request was not satisfied.")})
		reads := s.inj.Add(&Rule{Dependency: Tables, Match: entityReads, Fault: Pass()})
		updates := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Fault: Pass()})
		refreshes(t, 1, func() { wantToken(t, s.token(t, c.userID)) })
		if conflict.Injected() != 1 {
			t.Fatalf("412 injected %d times, want 1", conflict.Injected())
		}
		// The token API's read, the flight's re-read, and the re-read
		// after the conflict; then the write that lands.
		if reads.Injected() != 3 || updates.Injected() != 1 {
			t.Errorf("%d reads and %d more updates after the 412, want 3 and 1", reads.Injected(), updates.Injected())
		}
		s.expectKept(t, c, keptNewest)
	})

	t.Run("real 412: a usage write changed the row meanwhile", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[1]
		s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1, Fault: Before(func(*http.Request) {
			cur, err := s.store.Get(ctx, c.userID)
			if err == nil {
				cur.LastUsedAt = s.clock.Now()
				_, err = s.store.Update(ctx, cur)
			}
			if err != nil {
				t.Errorf("the concurrent usage write: %v", err)
			}
		})})
		refreshes(t, 1, func() { wantToken(t, s.token(t, c.userID)) })
		s.expectKept(t, c, keptNewest)
	})

	t.Run("real 412: another instance refreshed meanwhile", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[2]
		var otherAT atomic.Value // set in the handler's goroutine
		s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1, Fault: Before(func(*http.Request) {
			cur, err := s.store.Get(ctx, c.userID)
			if err != nil {
				t.Errorf("other instance: read: %v", err)
				return
			}
			g, err := s.ms.Refresh(ctx, cur.RefreshToken)
			if err != nil {
				t.Errorf("other instance: refresh: %v", err)
				return
			}
			cur.AccessToken, cur.RefreshToken, cur.AccessTokenExpiresAt, cur.LastRefreshedAt = g.AccessToken, g.RefreshToken, g.ExpiresAt, s.clock.Now()
			if _, err := s.store.Update(ctx, cur); err != nil {
				t.Errorf("other instance: write: %v", err)
			}
			otherAT.Store(g.AccessToken)
		})})
		var at string
		refreshes(t, 2, func() { at = wantToken(t, s.token(t, c.userID)) }) // ours and the other instance's
		if at != otherAT.Load() {
			t.Error("the token API did not answer with the other instance's newer token")
		}
		s.expectKept(t, c, keptNewest)
	})

	t.Run("the write landed but its answer was lost (reset)", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[3]
		lost := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1, Fault: ResetAfterForward()})
		// The SDK sends the update again with the old ETag: a real 412
		// against our own write, which the token service then adopts.
		refreshes(t, 1, func() { wantToken(t, s.token(t, c.userID)) })
		if lost.Injected() != 1 {
			t.Fatalf("reset injected %d times, want 1", lost.Injected())
		}
		s.expectKept(t, c, keptNewest)
	})

	t.Run("412 on a sweep's update", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		due := s.seed(t, 4, 3) // the connections above were just refreshed: not due
		conflict := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1,
			Fault: tableError(http.StatusPreconditionFailed, "UpdateConditionNotSatisfied", "The update condition specified in the request was not satisfied.")})
		var sum summary
		refreshes(t, 3, func() { sum = s.sweep(t) })
		if sum.Due != 3 || sum.Refreshed != 3 || conflict.Injected() != 1 {
			t.Errorf("sweep: %s with %d conflicts; want due=refreshed=3 with 1 conflict", sum, conflict.Injected())
		}
		for _, c := range due {
			s.expectKept(t, c, keptNewest)
		}
	})
}

// ServerBusy: the Azure SDK retries (2 retries configured in the app); a
// persistent one fails the request without touching the stored row.
func TestTableServerBusy(t *testing.T) {
	t.Parallel()
	s := start(t, options{accounts: 4})
	conns := s.seed(t, 0, 4)

	t.Run("503 once on the update is retried", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[0]
		busy := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Times: 1, Fault: serverBusy()})
		updates := s.inj.Add(&Rule{Dependency: Tables, Match: entityUpdates, Fault: Pass()})
		wantToken(t, s.token(t, c.userID))
		if busy.Injected() != 1 || updates.Injected() != 1 {
			t.Errorf("503 injected %d times, %d updates after it; want 1 and 1 (the SDK's retry)", busy.Injected(), updates.Injected())
		}
		s.expectKept(t, c, keptNewest)
	})

	t.Run("503 twice on the read is retried", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[1]
		busy := s.inj.Add(&Rule{Dependency: Tables, Match: entityReads, Times: 2, Fault: serverBusy()})
		wantToken(t, s.token(t, c.userID))
		if busy.Injected() != 2 {
			t.Errorf("503 injected %d times, want 2", busy.Injected())
		}
		s.expectKept(t, c, keptNewest)
	})

	t.Run("persistent 503: 500 internal_error, row intact", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[2]
		busy := s.inj.Add(&Rule{Dependency: Tables, Fault: serverBusy()})
		ms := s.inj.Requests(Microsoft)
		wantError(t, s.token(t, c.userID), http.StatusInternalServerError, "internal_error")
		if busy.Injected() != 3 {
			t.Errorf("%d attempts, want 3 (the read and the SDK's 2 retries)", busy.Injected())
		}
		if s.inj.Requests(Microsoft) != ms {
			t.Error("the handler called Microsoft without being able to read the connection")
		}
		s.inj.Clear()
		got := s.expectKept(t, c, keptNewest)
		if got.RefreshToken != c.seedRT || got.AccessToken != c.seedAT {
			t.Error("the row changed although every Table request failed")
		}
		wantToken(t, s.token(t, c.userID))
		s.expectKept(t, c, keptNewest)
	})

	t.Run("persistent 503 on writes after Microsoft rotated: row keeps a working token", func(t *testing.T) {
		t.Cleanup(s.inj.Clear)
		c := conns[3]
		busy := s.inj.Add(&Rule{Dependency: Tables, Match: TableWrites(connectionsTable), Fault: serverBusy()})
		r := s.token(t, c.userID)
		// The refresh happened but could not be stored, and the stored
		// access token has expired: the CMS is told to retry later.
		wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if busy.Injected() != 3 {
			t.Errorf("%d write attempts, want 3", busy.Injected())
		}
		got := s.expectKept(t, c, keptOlderAccepted)
		if got.RefreshToken != c.seedRT {
			t.Error("the row changed although every write failed")
		}
		s.inj.Clear()
		wantToken(t, s.token(t, c.userID))
		s.expectKept(t, c, keptNewest)
	})
}

// Table Storage does not answer in time (the handler's client times out):
// the SDK retries; an update whose write landed before the answer was lost
// ends in a 412 against our own write, which is adopted.
func TestTableTimeouts(t *testing.T) {
	t.Parallel()
	s := start(t, options{accounts: 3, clientTimeout: 2 * time.Second})
	conns := s.seed(t, 0, 3)
	for i, tc := range []struct {
		name  string
		match func(*http.Request) bool
		fault Fault
	}{
		{"the read times out once", entityReads, Hang()},
		{"the update times out before it is applied", entityUpdates, Hang()},
		{"the update is applied, then its answer times out", entityUpdates, HangAfterForward()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(s.inj.Clear)
			c := conns[i]
			rule := s.inj.Add(&Rule{Dependency: Tables, Match: tc.match, Times: 1, Fault: tc.fault})
			wantToken(t, s.token(t, c.userID))
			if rule.Injected() != 1 {
				t.Fatalf("injected %d times, want 1", rule.Injected())
			}
			s.expectKept(t, c, keptNewest)
		})
	}
}

// Table Storage starts failing every write halfway through a sweep of 50
// due connections. The sweep reports what it could not store; each of those
// rows keeps a refresh token Microsoft still accepts; a second sweep without
// faults refreshes exactly those.
func TestSweepWithTableWritesFailingHalfway(t *testing.T) {
	t.Parallel()
	const n, okWrites = 50, 20
	s := start(t, options{accounts: n})
	conns := s.seed(t, 0, n)
	busy := s.inj.Add(&Rule{Dependency: Tables, Match: TableWrites(connectionsTable), After: okWrites, Fault: serverBusy()})

	sum := s.sweep(t)
	if sum.Due != n || sum.Refreshed != okWrites || sum.TransientFailures != n-okWrites || sum.ReconnectRequired != 0 {
		t.Errorf("first sweep: %s; want due=%d refreshed=%d transient_failures=%d reconnect_required=0", sum, n, okWrites, n-okWrites)
	}
	if busy.Injected() != 3*(n-okWrites) {
		t.Errorf("%d failed writes, want %d (3 attempts for each connection not stored)", busy.Injected(), 3*(n-okWrites))
	}
	count := map[kept]int{}
	for _, c := range conns {
		_, k := s.stored(t, c)
		count[k]++
	}
	if count[keptNewest] != okWrites || count[keptOlderAccepted] != n-okWrites {
		t.Errorf("after the first sweep: %d rows with the newest token, %d with an older accepted one; want %d and %d",
			count[keptNewest], count[keptOlderAccepted], okWrites, n-okWrites)
	}

	s.inj.Clear()
	sum = s.sweep(t)
	if sum.Due != n-okWrites || sum.Refreshed != n-okWrites || sum.TransientFailures != 0 || sum.ReconnectRequired != 0 {
		t.Errorf("second sweep: %s; want due=refreshed=%d", sum, n-okWrites)
	}
	for _, c := range conns {
		got := s.expectKept(t, c, keptNewest)
		if got.Status != connection.StatusConnected || got.LastError != nil {
			t.Errorf("%s: status %s, last error %v", c.userID, got.Status, got.LastError)
		}
	}
}
