package tokens

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// msErr stands in for msidentity.Error: a classified error with an
// optional Retry-After.
type msErr struct {
	class connection.Class
	code  string
	after time.Duration
}

func (e *msErr) Error() string                { return "ms: " + e.code }
func (e *msErr) ErrorClass() connection.Class { return e.class }
func (e *msErr) ErrorCode() string            { return e.code }
func (e *msErr) RetryAfter() time.Duration    { return e.after }

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

type recorder struct {
	mu     sync.Mutex
	events []connection.Event
}

func (r *recorder) Publish(_ context.Context, e connection.Event) error {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	return nil
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
	f := &fixture{store: memstore.New(memstore.Options{}), ref: &fakeRefresher{}, ev: &recorder{}, now: t0}
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
	if !errors.Is(err, ErrReconnectRequired) {
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
	if _, err := f.svc.Token(context.Background(), "u1"); !errors.Is(err, ErrReconnectRequired) {
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
	var cfg *ConfigurationError
	if !errors.As(err, &cfg) {
		t.Fatalf("err = %v, want ConfigurationError", err)
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
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.RetryAfter != 42*time.Second {
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
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.RetryAfter != DefaultRetryAfter {
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
	if _, err := f.svc.Token(context.Background(), "u1"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("err = %v, want ErrNotConnected", err)
	}
	if _, err := f.store.Get(context.Background(), "u1"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("a disconnected connection came back: %v", err)
	}
}

func TestNotConnected(t *testing.T) {
	f := newFixture(t, time.Hour)
	if _, err := f.svc.Token(context.Background(), "nobody"); !errors.Is(err, ErrNotConnected) {
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
