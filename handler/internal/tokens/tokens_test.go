package tokens

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// msErr stands in for msidentity.Error: a classified error with an
// optional Retry-After.
type msErr struct {
	class connection.Class
	code  string
	after time.Duration
	scope connection.ThrottleScope
	err   error
}

func (e *msErr) Error() string                { return "ms: " + e.code }
func (e *msErr) ErrorClass() connection.Class { return e.class }
func (e *msErr) ErrorCode() string            { return e.code }
func (e *msErr) RetryAfter() time.Duration    { return e.after }
func (e *msErr) Unwrap() error                { return e.err }
func (e *msErr) ThrottleScope() connection.ThrottleScope {
	return e.scope
}

// loop is AADSTS50196 as msidentity reports it.
func loop(after time.Duration) *msErr {
	return &msErr{class: connection.ClassTransient, code: "invalid_grant", after: after, scope: connection.ThrottleConnection}
}

type fakeRefresher struct {
	calls  atomic.Int64
	delay  time.Duration
	err    error
	noRT   bool
	during func() // runs inside Refresh: another writer racing us
	mu     sync.Mutex
	seq    int
}

func (f *fakeRefresher) Refresh(ctx context.Context, rt string) (connection.Grant, error) {
	f.calls.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.during != nil {
		f.during()
	}
	if f.err != nil {
		return connection.Grant{}, f.err
	}
	f.mu.Lock()
	f.seq++
	n := f.seq
	f.mu.Unlock()
	g := connection.Grant{AccessToken: "at-" + itoa(n), ExpiresAt: t0.Add(time.Hour), Scopes: []string{"User.Read"}}
	if !f.noRT {
		g.RefreshToken = "rt-" + itoa(n)
	}
	return g, nil
}

func itoa(n int) string { return string(rune('0'+n/10)) + string(rune('0'+n%10)) }

// recorder records the events sent (Send), which the store has kept
// with their change (Prepare's entry).
type recorder struct {
	mu       sync.Mutex
	n        int
	prepared map[string]connection.Event
	events   []connection.Event
}

func (r *recorder) Prepare(e connection.Event) *connection.OutboxEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.prepared == nil {
		r.prepared = map[string]connection.Event{}
	}
	r.n++
	id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", r.n)
	r.prepared[id] = e
	return &connection.OutboxEntry{UserID: e.UserID, DeliveryID: id, Type: e.Type, Body: "{}", CreatedAt: e.At}
}

func (r *recorder) Send(_ context.Context, ob *connection.OutboxEntry) {
	if ob == nil {
		return
	}
	r.mu.Lock()
	r.events = append(r.events, r.prepared[ob.DeliveryID])
	r.mu.Unlock()
}

type fixture struct {
	store *memstore.Store
	ref   *fakeRefresher
	ev    *recorder
	svc   *Service
	now   time.Time
}

func newFixture(t *testing.T, expiresIn time.Duration) *fixture {
	t.Helper()
	f := &fixture{store: memstore.New(memstore.Options{Now: time.Now}), ref: &fakeRefresher{}, ev: &recorder{}, now: t0}
	f.svc = &Service{Store: f.store, Refresher: f.ref, Events: f.ev, Policy: connection.DefaultPolicy(), Log: zerolog.Nop(), Now: func() time.Time { return f.now }}
	_, err := f.store.Create(context.Background(), connection.Connection{
		UserID: "u1", Status: connection.StatusConnected, Account: connection.Account{ID: "oid", TenantID: "tid", Email: "ada@contoso.com"},
		AccessToken: "at-old", RefreshToken: "rt-old", AccessTokenExpiresAt: t0.Add(expiresIn),
		ConnectedAt: t0.Add(-time.Hour), LastRefreshedAt: t0.Add(-time.Hour), LastUsedAt: t0,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.svc.Wait)
	return f
}

func (f *fixture) get(t *testing.T) connection.Connection {
	t.Helper()
	c, err := f.store.Get(context.Background(), "u1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestValidTokenIsReturnedWithoutRefresh(t *testing.T) {
	f := newFixture(t, 30*time.Minute)
	tok, err := f.svc.Token(context.Background(), "u1")
	if err != nil || tok.AccessToken != "at-old" {
		t.Fatalf("got %v %v, want at-old", tok.AccessToken, err)
	}
	if n := f.ref.calls.Load(); n != 0 {
		t.Errorf("refresh calls = %d, want 0", n)
	}
}

func TestDueTokenIsRefreshedAndRotatedTokenStored(t *testing.T) {
	f := newFixture(t, 4*time.Minute) // inside the 5-minute margin
	tok, err := f.svc.Token(context.Background(), "u1")
	if err != nil || tok.AccessToken != "at-01" {
		t.Fatalf("got %q %v, want at-01", tok.AccessToken, err)
	}
	c := f.get(t)
	if c.RefreshToken != "rt-01" || c.AccessToken != "at-01" || !c.LastRefreshedAt.Equal(t0) {
		t.Errorf("stored %v rt=%q", c, c.RefreshToken)
	}
}

func TestMissingRefreshTokenKeepsTheOldOne(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.noRT = true
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	if c := f.get(t); c.RefreshToken != "rt-old" || c.AccessToken != "at-01" {
		t.Errorf("rt=%q at=%q, want rt-old and at-01", c.RefreshToken, c.AccessToken)
	}
}

func TestReconnectRequiredMarksTheConnection(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.err = &msErr{class: connection.ClassReconnectRequired, code: "invalid_grant"}
	_, err := f.svc.Token(context.Background(), "u1")
	if !errors.Is(err, connection.ErrReconnectRequired) {
		t.Fatalf("err = %v, want ErrReconnectRequired", err)
	}
	c := f.get(t)
	if c.Status != connection.StatusReconnectRequired || c.LastError == nil || c.LastError.Code != "invalid_grant" {
		t.Errorf("stored %v last_error %+v", c, c.LastError)
	}
	if len(f.ev.events) != 1 || f.ev.events[0].Type != connection.EventReconnectRequired || f.ev.events[0].Reason != "invalid_grant" {
		t.Errorf("events = %+v", f.ev.events)
	}
	// Never refreshed again: the next call answers at once.
	calls := f.ref.calls.Load()
	if _, err := f.svc.Token(context.Background(), "u1"); !errors.Is(err, connection.ErrReconnectRequired) {
		t.Errorf("second call err = %v", err)
	}
	if out, _ := f.svc.RefreshIfDue(context.Background(), "u1"); out != MarkedReconnect || f.ref.calls.Load() != calls {
		t.Errorf("a reconnect_required connection was refreshed again (outcome %v)", out)
	}
}

func TestConfigurationErrorBlamesNoUser(t *testing.T) {
	f := newFixture(t, -time.Minute) // already expired
	f.ref.err = &msErr{class: connection.ClassConfiguration, code: "invalid_client"}
	_, err := f.svc.Token(context.Background(), "u1")
	if code := connection.ErrorCode(err); code != connection.ENotConfigured {
		t.Fatalf("err = %v (code %s), want not_configured", err, code)
	}
	if c := f.get(t); c.Status != connection.StatusConnected || c.RefreshToken != "rt-old" || c.LastError != nil {
		t.Errorf("connection changed: %v", c)
	}
	if len(f.ev.events) != 0 {
		t.Errorf("events = %+v", f.ev.events)
	}
}

func TestTransientFailure(t *testing.T) {
	t.Run("still valid token is returned", func(t *testing.T) {
		f := newFixture(t, 2*time.Minute)
		f.ref.err = &msErr{class: connection.ClassTransient, code: "temporarily_unavailable"}
		tok, err := f.svc.Token(context.Background(), "u1")
		if err != nil || tok.AccessToken != "at-old" {
			t.Fatalf("got %q %v", tok.AccessToken, err)
		}
	})
	t.Run("expired token gives 503 with the server's Retry-After", func(t *testing.T) {
		f := newFixture(t, -time.Second)
		f.ref.err = &msErr{class: connection.ClassTransient, code: "throttled", after: 42 * time.Second}
		_, err := f.svc.Token(context.Background(), "u1")
		var ue *connection.Error
		if !errors.As(err, &ue) || ue.Code != connection.EUnavailable || ue.RetryAfter != 42*time.Second {
			t.Fatalf("err = %v", err)
		}
		if c := f.get(t); c.Status != connection.StatusConnected || c.RefreshToken != "rt-old" {
			t.Errorf("connection changed: %v", c)
		}
	})
	t.Run("network error without Retry-After gets the default", func(t *testing.T) {
		f := newFixture(t, -time.Second)
		f.ref.err = errors.New("dial tcp: connection refused")
		_, err := f.svc.Token(context.Background(), "u1")
		var ue *connection.Error
		if !errors.As(err, &ue) || ue.Code != connection.EUnavailable || ue.RetryAfter != DefaultRetryAfter {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestConcurrentCallersShareOneRefresh(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.delay = 50 * time.Millisecond
	var wg sync.WaitGroup
	got := make([]string, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := f.svc.Token(context.Background(), "u1")
			if err != nil {
				t.Error(err)
			}
			got[i] = tok.AccessToken
		}()
	}
	wg.Wait()
	if n := f.ref.calls.Load(); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	for i, g := range got {
		if g != "at-01" {
			t.Errorf("caller %d got %q", i, g)
		}
	}
}

func TestBookkeepingWriteDuringRefreshKeepsRotatedToken(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.during = func() {
		// Another writer (a usage mark) changes the row: our Update loses
		// the ETag race but must re-apply the rotated token.
		c := f.get(t)
		c.LastUsedAt = t0.Add(time.Second)
		if _, err := f.store.Update(context.Background(), c); err != nil {
			t.Error(err)
		}
	}
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	if c := f.get(t); c.RefreshToken != "rt-01" {
		t.Errorf("rotated refresh token lost: stored %q", c.RefreshToken)
	}
}

func TestOtherInstanceRefreshedFirst(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.during = func() {
		c := f.get(t)
		c.AccessToken, c.RefreshToken, c.AccessTokenExpiresAt = "at-theirs", "rt-theirs", t0.Add(time.Hour)
		if _, err := f.store.Update(context.Background(), c); err != nil {
			t.Error(err)
		}
	}
	tok, err := f.svc.Token(context.Background(), "u1")
	if err != nil || tok.AccessToken != "at-theirs" {
		t.Fatalf("got %q %v, want the winner's token", tok.AccessToken, err)
	}
	if c := f.get(t); c.RefreshToken != "rt-theirs" {
		t.Errorf("stored %q, want the winner's refresh token", c.RefreshToken)
	}
}

func TestDisconnectDuringRefreshWins(t *testing.T) {
	f := newFixture(t, time.Minute)
	f.ref.during = func() {
		if err := f.store.Delete(context.Background(), "u1"); err != nil {
			t.Error(err)
		}
	}
	if _, err := f.svc.Token(context.Background(), "u1"); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("err = %v, want connection.ErrNotFound", err)
	}
	if _, err := f.store.Get(context.Background(), "u1"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("a disconnected connection came back: %v", err)
	}
}

func TestNotConnected(t *testing.T) {
	f := newFixture(t, time.Hour)
	if _, err := f.svc.Token(context.Background(), "nobody"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

func TestUsageIsRecordedAtMostEveryGranularity(t *testing.T) {
	f := newFixture(t, time.Hour)
	f.now = t0.Add(connection.UsageGranularity + time.Minute)
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	f.svc.Wait()
	if c := f.get(t); !c.LastUsedAt.Equal(f.now) {
		t.Errorf("LastUsedAt = %s, want %s", c.LastUsedAt, f.now)
	}
	etag := f.get(t).ETag
	if _, err := f.svc.Token(context.Background(), "u1"); err != nil {
		t.Fatal(err)
	}
	f.svc.Wait()
	if f.get(t).ETag != etag {
		t.Error("a second token read within the granularity wrote to the store")
	}
}

func TestLoopDetectedPausesThatConnectionInItsRow(t *testing.T) {
	f := newFixture(t, 2*time.Minute) // due for the token API, still valid
	logs := &logtest.Buffer{}
	f.svc.Log = zerolog.New(logs)
	f.ref.err = loop(10 * time.Minute)

	// The call that meets AADSTS50196 answers with the stored token.
	tok, err := f.svc.Token(context.Background(), "u1")
	if err != nil || tok.AccessToken != "at-old" {
		t.Fatalf("Token = %q, %v; want the stored at-old", tok.AccessToken, err)
	}
	c := f.get(t)
	if !c.ThrottledUntil.Equal(t0.Add(10*time.Minute)) || c.Status != connection.StatusConnected || c.RefreshToken != "rt-old" {
		t.Fatalf("row after 50196 = %v, ThrottledUntil %v; want connected and paused until %v", c, c.ThrottledUntil, t0.Add(10*time.Minute))
	}
	ev := logs.StrictEvents(t, "throttled")
	if len(ev) != 1 || ev[0]["user_id"] != "u1" || ev[0]["retry_after_s"] != 600.0 {
		t.Fatalf("throttled lines = %v, want one with user_id u1 and retry_after_s 600", ev)
	}

	// While paused: no call to Microsoft; the stored token while valid ...
	f.ref.err = nil
	if tok, err := f.svc.Token(context.Background(), "u1"); err != nil || tok.AccessToken != "at-old" {
		t.Fatalf("Token during the pause = %q, %v", tok.AccessToken, err)
	}
	// ... then 503 with what remains of the pause.
	f.now = t0.Add(3 * time.Minute)
	_, err = f.svc.Token(context.Background(), "u1")
	var ue *connection.Error
	if !errors.As(err, &ue) || ue.Code != connection.EUnavailable || ue.RetryAfter != 7*time.Minute {
		t.Fatalf("Token during the pause with an expired token = %v, want unavailable for 7m", err)
	}
	// The sweep's entry skips it.
	f.svc.Policy.MaxAge = time.Minute // due for the sweep too
	if out, err := f.svc.RefreshIfDue(context.Background(), "u1"); out != Skipped || err != nil {
		t.Fatalf("RefreshIfDue during the pause = %v, %v; want Skipped", out, err)
	}
	if n := f.ref.calls.Load(); n != 1 {
		t.Fatalf("refresh calls = %d, want 1 (none during the pause)", n)
	}

	// After the pause: refreshed, and the pause is cleared.
	f.now = t0.Add(10*time.Minute + time.Second)
	if tok, err := f.svc.Token(context.Background(), "u1"); err != nil || tok.AccessToken == "at-old" {
		t.Fatalf("Token after the pause = %q, %v", tok.AccessToken, err)
	}
	if c := f.get(t); !c.ThrottledUntil.IsZero() {
		t.Errorf("pause not cleared by the refresh: %v", c.ThrottledUntil)
	}
}

func TestLoopDetectedWithoutRetryAfterPausesAMinute(t *testing.T) {
	f := newFixture(t, -time.Second)
	f.ref.err = loop(0)
	_, err := f.svc.Token(context.Background(), "u1")
	var ue *connection.Error
	if !errors.As(err, &ue) || ue.Code != connection.EUnavailable || ue.RetryAfter != time.Minute {
		t.Fatalf("Token = %v, want unavailable, retry after 1m", err)
	}
	if c := f.get(t); !c.ThrottledUntil.Equal(t0.Add(time.Minute)) {
		t.Errorf("ThrottledUntil = %v, want %v", c.ThrottledUntil, t0.Add(time.Minute))
	}
}

func TestLoopDetectedPausesOnlyThatConnection(t *testing.T) {
	f := newFixture(t, -time.Second)
	if _, err := f.store.Create(context.Background(), connection.Connection{
		UserID: "u2", Status: connection.StatusConnected, AccessToken: "at-u2", RefreshToken: "rt-u2",
		AccessTokenExpiresAt: t0.Add(-time.Second), ConnectedAt: t0.Add(-time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	f.ref.err = loop(time.Minute)
	if _, err := f.svc.Token(context.Background(), "u1"); err == nil {
		t.Fatal("u1's refresh met 50196 but Token succeeded")
	}
	f.ref.err = nil
	if tok, err := f.svc.Token(context.Background(), "u2"); err != nil || tok.AccessToken == "at-u2" {
		t.Fatalf("u2 during u1's pause = %q, %v; want a refreshed token", tok.AccessToken, err)
	}
	if c, _ := f.store.Get(context.Background(), "u2"); !c.ThrottledUntil.IsZero() {
		t.Errorf("u2 paused too: %v", c.ThrottledUntil)
	}
}

func TestLoopDetectedPauseSurvivesARacingWrite(t *testing.T) {
	t.Run("bookkeeping write: the pause is stored on the fresh row", func(t *testing.T) {
		f := newFixture(t, -time.Second)
		f.ref.err = loop(time.Minute)
		f.ref.during = func() {
			c := f.get(t)
			c.LastUsedAt = t0.Add(time.Second)
			if _, err := f.store.Update(context.Background(), c); err != nil {
				t.Error(err)
			}
		}
		_, _ = f.svc.Token(context.Background(), "u1")
		c := f.get(t)
		if !c.ThrottledUntil.Equal(t0.Add(time.Minute)) || !c.LastUsedAt.Equal(t0.Add(time.Second)) {
			t.Errorf("row = ThrottledUntil %v, LastUsedAt %v; want both writes kept", c.ThrottledUntil, c.LastUsedAt)
		}
	})
	t.Run("another instance refreshed: its new grant is not paused", func(t *testing.T) {
		f := newFixture(t, -time.Second)
		f.ref.err = loop(time.Minute)
		f.ref.during = func() {
			c := f.get(t)
			c.RefreshToken, c.AccessToken, c.AccessTokenExpiresAt = "rt-other", "at-other", t0.Add(time.Hour)
			if _, err := f.store.Update(context.Background(), c); err != nil {
				t.Error(err)
			}
		}
		_, _ = f.svc.Token(context.Background(), "u1")
		if c := f.get(t); !c.ThrottledUntil.IsZero() || c.RefreshToken != "rt-other" {
			t.Errorf("row = %v, ThrottledUntil %v; want the other instance's grant, unpaused", c, c.ThrottledUntil)
		}
	})
}

func TestInstancePauseIsASkipForTheSweep(t *testing.T) {
	f := newFixture(t, -time.Second)
	// msidentity did not send the refresh: this instance is paused (429).
	f.ref.err = &msErr{class: connection.ClassTransient, code: "throttled", after: 20 * time.Second, err: connection.ErrPaused}
	if out, err := f.svc.RefreshIfDue(context.Background(), "u1"); out != Skipped || err != nil {
		t.Fatalf("RefreshIfDue = %v, %v; want Skipped", out, err)
	}
	_, err := f.svc.Token(context.Background(), "u1")
	var ue *connection.Error
	if !errors.As(err, &ue) || ue.Code != connection.EUnavailable || ue.RetryAfter != 20*time.Second {
		t.Fatalf("Token = %v, want unavailable for 20s", err)
	}
	if c := f.get(t); !c.ThrottledUntil.IsZero() {
		t.Errorf("an instance pause was stored on the connection: %v", c.ThrottledUntil)
	}
}
