package connectflow_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// The v2 completion's rules on the service itself: the callback keeps a
// pending connect and connects nothing; only a completion by the user the
// connect was started for stores it, exactly once; anyone else's
// completion destroys it.

// events records the events sent (Send), which the store has kept with
// their change (Prepare's entry): a change that is not stored sends none.
type events struct {
	mu       sync.Mutex
	n        int
	prepared map[string]connection.Event
	got      []connection.Event
}

func (e *events) Prepare(ev connection.Event) *connection.OutboxEntry {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.prepared == nil {
		e.prepared = map[string]connection.Event{}
	}
	e.n++
	id := fmt.Sprintf("%08x-0000-4000-8000-000000000000", e.n)
	e.prepared[id] = ev
	return &connection.OutboxEntry{UserID: ev.UserID, DeliveryID: id, Type: ev.Type, Body: "{}", CreatedAt: ev.At}
}

func (e *events) Send(_ context.Context, ob *connection.OutboxEntry) {
	if ob == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, e.prepared[ob.DeliveryID])
}

func (e *events) types() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		out = append(out, ev.Type+":"+ev.UserID)
	}
	return out
}

// signIn runs session, connect and callback for userID and returns the
// connect code from the redirect.
func (f *flow) signIn(t *testing.T, userID, code string) string {
	t.Helper()
	ctx := context.Background()
	b, err := f.svc.BeginConnect(ctx, f.session(t, userID))
	if err != nil {
		t.Fatal(err)
	}
	to, err := f.svc.HandleCallback(ctx, connectflow.Callback{Code: code, State: stateOf(t, b), Cookie: b.Cookie})
	if err != nil {
		t.Fatal(err)
	}
	return connectCode(t, to)
}

func withEvents(f *flow) *events {
	ev := &events{}
	f.svc.Events = ev
	return ev
}

func TestCallbackConnectsNothing(t *testing.T) {
	f := newFlow(t)
	ev := withEvents(f)
	ctx := context.Background()
	code := f.signIn(t, "42", "c")
	if _, err := f.svc.Store.Peek(ctx, "42"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("the callback stored a connection: %v", err)
	}
	if len(ev.types()) != 0 {
		t.Errorf("the callback sent events %v", ev.types())
	}
	raw, err := base64.RawURLEncoding.DecodeString(code)
	if err != nil || len(raw) < 16 {
		t.Errorf("connect code %q: %d bytes of randomness, want at least 16 (128 bits)", code, len(raw))
	}
	var pc connection.Pending
	for _, p := range f.store.written {
		if p.Kind == connection.PendingConnect {
			pc = p
		}
	}
	if pc.ID != sha(code) || pc.UserID != "42" || pc.Grant.RefreshToken != "rt-c" || pc.Grant.Account.ID != "oid" || pc.Grant.Account.Email != "ada@contoso.com" {
		t.Fatalf("pending connect %v: want keyed by the code's SHA-256, for 42, holding the grant", pc)
	}
	if got := pc.ExpiresAt.Sub(pc.CreatedAt); got != 10*time.Minute || connectflow.ConnectTTL != 10*time.Minute {
		t.Errorf("pending connect lives %s, contract says 10 minutes", got)
	}
	for _, field := range []string{pc.ID, pc.UserID, pc.ReturnURL, pc.LoginHint, pc.Verifier, pc.BrowserHash} {
		if strings.Contains(field, code) {
			t.Errorf("the pending connect holds the connect code in clear: %v", pc)
		}
	}
}

func TestCompleteStoresForTheStarterOnly(t *testing.T) {
	f := newFlow(t)
	ev := withEvents(f)
	logs := &logtest.Buffer{}
	f.svc.Log = zerolog.New(logs)
	ctx := context.Background()

	mCode := f.signIn(t, "m", "for-m")
	// V's CMS session completes M's code (M's link opened in V's browser,
	// or V's browser handed M's return link): refused, spent, destroyed.
	if _, err := f.svc.Complete(ctx, "v", mCode); !errors.Is(err, connectflow.ErrUserMismatch) {
		t.Fatalf("Complete(v, m's code) = %v, want ErrUserMismatch", err)
	}
	if _, err := f.svc.Complete(ctx, "m", mCode); !errors.Is(err, connectflow.ErrConnectCodeInvalid) {
		t.Fatalf("Complete(m, m's code) after the mismatch = %v, want ErrConnectCodeInvalid: the result must be destroyed", err)
	}
	for _, u := range []string{"m", "v"} {
		if _, err := f.svc.Store.Peek(ctx, u); !errors.Is(err, connection.ErrNotFound) {
			t.Errorf("%s has a connection after the mismatch: %v", u, err)
		}
	}
	if _, err := f.store.GetPending(ctx, connection.PendingConnect, sha(mCode)); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("the mismatched pending connect is still stored: %v", err)
	}
	if len(ev.types()) != 0 {
		t.Errorf("events after a mismatch: %v", ev.types())
	}
	lines := logs.Events("oauth_failed")
	if len(lines) != 1 || lines[0]["reason"] != "user_mismatch" || lines[0]["user_id"] != "v" || lines[0]["started_by"] != "m" {
		t.Errorf("oauth_failed lines %v, want one with reason user_mismatch, user_id v, started_by m", lines)
	}
	if strings.Contains(logs.String(), mCode) || strings.Contains(logs.String(), "rt-for-m") {
		t.Error("the log holds the connect code or a token")
	}

	// The right user completes: stored, spent, one event.
	code := f.signIn(t, "m", "again")
	c, err := f.svc.Complete(ctx, "m", code)
	if err != nil || c.UserID != "m" || c.Status != connection.StatusConnected || c.Account.ID != "oid" {
		t.Fatalf("Complete(m) = %v, %v", c, err)
	}
	got, err := f.svc.Store.Get(ctx, "m")
	if err != nil || got.RefreshToken != "rt-again" {
		t.Fatalf("stored connection %v, %v", got, err)
	}
	if _, err := f.svc.Complete(ctx, "m", code); !errors.Is(err, connectflow.ErrConnectCodeInvalid) {
		t.Errorf("second Complete with one code = %v, want ErrConnectCodeInvalid", err)
	}
	if got := ev.types(); len(got) != 1 || got[0] != "connection.connected:m" {
		t.Errorf("events %v, want one connection.connected for m", got)
	}
}

func TestCompleteRace(t *testing.T) {
	for _, mixed := range []bool{false, true} {
		f := newFlow(t)
		ev := withEvents(f)
		code := f.signIn(t, "42", "race")
		const n = 20
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				user := "42"
				if mixed && i%2 == 1 {
					user = "intruder"
				}
				_, errs[i] = f.svc.Complete(context.Background(), user, code)
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil, errors.Is(err, connectflow.ErrUserMismatch):
				wins++
			case !errors.Is(err, connectflow.ErrConnectCodeInvalid):
				t.Errorf("losing Complete: %v", err)
			}
		}
		if wins != 1 {
			t.Errorf("mixed %t: %d of %d racing completions spent the code, want exactly 1", mixed, wins, n)
		}
		_, err := f.svc.Store.Peek(context.Background(), "42")
		stored := err == nil
		if got := ev.types(); stored != (len(got) == 1) || len(got) > 1 {
			t.Errorf("mixed %t: stored %t, events %v", mixed, stored, got)
		}
		if !mixed && !stored {
			t.Errorf("no connection after a race of the right user")
		}
	}
}

func TestConnectCodeLivesTenMinutes(t *testing.T) {
	f := newFlow(t)
	ctx := context.Background()
	early, late := f.signIn(t, "early", "e"), f.signIn(t, "late", "l")
	f.clock.Advance(connectflow.ConnectTTL - time.Second)
	if _, err := f.svc.Complete(ctx, "early", early); err != nil {
		t.Fatalf("code at 9m59s: %v", err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.svc.Complete(ctx, "late", late); !errors.Is(err, connectflow.ErrConnectCodeInvalid) {
		t.Fatalf("code at 10m: %v, want ErrConnectCodeInvalid", err)
	}
	if _, err := f.svc.Store.Peek(ctx, "late"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("an expired code connected: %v", err)
	}
	// The sweep's clean-up removes it.
	if n, err := f.store.DeleteExpired(ctx, f.clock.Now().Add(time.Millisecond)); err != nil || n == 0 {
		t.Errorf("DeleteExpired = %d, %v", n, err)
	}
	if _, err := f.store.GetPending(ctx, connection.PendingConnect, sha(late)); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("expired pending connect survives the clean-up: %v", err)
	}
}

func TestCompleteReplacesAndRecovers(t *testing.T) {
	f := newFlow(t)
	ev := withEvents(f)
	ctx := context.Background()
	if _, err := f.svc.Complete(ctx, "42", f.signIn(t, "42", "one")); err != nil {
		t.Fatal(err)
	}
	c, err := f.svc.Store.Get(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}
	c.Status = connection.StatusReconnectRequired
	c.LastError = &connection.LastError{Code: "invalid_grant", At: f.clock.Now()}
	if _, err := f.svc.Store.Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A pending connect changes nothing until it is completed.
	code := f.signIn(t, "42", "two")
	if got, _ := f.svc.Store.Peek(ctx, "42"); got.Status != connection.StatusReconnectRequired {
		t.Errorf("status before completion = %s, want reconnect_required as it was", got.Status)
	}
	if _, err := f.svc.Complete(ctx, "42", code); err != nil {
		t.Fatal(err)
	}
	got, err := f.svc.Store.Get(ctx, "42")
	if err != nil || got.Status != connection.StatusConnected || got.RefreshToken != "rt-two" || got.LastError != nil {
		t.Errorf("after the second completion: %v %v", got, err)
	}
	if _, err := f.svc.Complete(ctx, "42", f.signIn(t, "42", "three")); err != nil {
		t.Fatal(err)
	}
	want := []string{"connection.connected:42", "connection.recovered:42", "connection.connected:42"}
	if got := ev.types(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("events %v, want %v", got, want)
	}
}

func TestCompleteRefusesInvalidUserIDs(t *testing.T) {
	f := newFlow(t)
	code := f.signIn(t, "42", "x")
	for _, id := range []string{"", ".", "..", "a/b", "4 2", "42?", "ü"} {
		var in *connection.Error
		if _, err := f.svc.Complete(context.Background(), id, code); !errors.As(err, &in) || in.Code != "invalid_request" {
			t.Errorf("Complete(%q) = %v, want invalid_request", id, err)
		}
	}
	// The refusals did not spend the code.
	if _, err := f.svc.Complete(context.Background(), "42", code); err != nil {
		t.Errorf("Complete(42) after refused ids: %v", err)
	}
}

// failingWrites is a connection store whose writes fail, as when the
// process dies (or Table Storage is lost) right after the code was spent.
type failingWrites struct{ connection.Store }

var errWriteLost = errors.New("write lost")

func (failingWrites) Create(context.Context, connection.Connection) (connection.Connection, error) {
	return connection.Connection{}, errWriteLost
}

func (failingWrites) Update(context.Context, connection.Connection) (connection.Connection, error) {
	return connection.Connection{}, errWriteLost
}

func (failingWrites) CreateWithEvent(context.Context, connection.Connection, *connection.OutboxEntry) (connection.Connection, error) {
	return connection.Connection{}, errWriteLost
}

func (failingWrites) UpdateWithEvent(context.Context, connection.Connection, *connection.OutboxEntry) (connection.Connection, error) {
	return connection.Connection{}, errWriteLost
}

// TestAFailedStoreKeepsTheSignIn: Complete spends the code before it
// stores the connection. When the store fails, the signed-in result is put
// back as it was: the earlier connection is untouched, no event is sent,
// and a retry with the same code (by the same user) finishes the connect,
// once.
func TestAFailedStoreKeepsTheSignIn(t *testing.T) {
	f := newFlow(t)
	ev := withEvents(f)
	ctx := context.Background()
	if _, err := f.svc.Complete(ctx, "42", f.signIn(t, "42", "first")); err != nil {
		t.Fatal(err)
	}
	before, err := f.svc.Store.Get(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}
	code := f.signIn(t, "42", "second")
	healthy := f.svc.Store
	f.svc.Store = failingWrites{healthy}
	if _, err := f.svc.Complete(ctx, "42", code); !errors.Is(err, errWriteLost) {
		t.Fatalf("Complete with a lost write = %v, want the write's error", err)
	}
	f.svc.Store = healthy
	if after, err := f.svc.Store.Get(ctx, "42"); err != nil || after.RefreshToken != before.RefreshToken || after.ETag != before.ETag {
		t.Errorf("the earlier connection changed: %v %v", after, err)
	}
	if got := ev.types(); len(got) != 1 {
		t.Errorf("events %v, want only the first connect's", got)
	}
	if _, err := f.svc.Complete(ctx, "42", code); err != nil {
		t.Fatalf("retry with the same code after a failed store = %v, want it to finish the connect", err)
	}
	if _, err := f.svc.Complete(ctx, "42", code); !errors.Is(err, connectflow.ErrConnectCodeInvalid) {
		t.Errorf("a second use of the code = %v, want ErrConnectCodeInvalid", err)
	}
}

// failingPut is a pending store that cannot store anything new, as when
// the process dies right after the code was spent.
type failingPut struct{ connection.PendingStore }

func (failingPut) PutPending(context.Context, connection.Pending) error { return errWriteLost }

// TestSpentCodeWithALostWriteIsNeverUsedTwice: when neither the connection
// nor the put-back can be stored (the process died in between), the
// sign-in is lost (the user connects again) but nothing else: the earlier
// connection is as it was, no event is sent, and the code cannot be used a
// second time, by this user or anyone.
func TestSpentCodeWithALostWriteIsNeverUsedTwice(t *testing.T) {
	f := newFlow(t)
	ev := withEvents(f)
	ctx := context.Background()
	if _, err := f.svc.Complete(ctx, "42", f.signIn(t, "42", "first")); err != nil {
		t.Fatal(err)
	}
	before, err := f.svc.Store.Get(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}
	code := f.signIn(t, "42", "second")
	healthy, pending := f.svc.Store, f.svc.Pending
	f.svc.Store, f.svc.Pending = failingWrites{healthy}, failingPut{pending}
	if _, err := f.svc.Complete(ctx, "42", code); !errors.Is(err, errWriteLost) {
		t.Fatalf("Complete with a lost write = %v, want the write's error", err)
	}
	f.svc.Store, f.svc.Pending = healthy, pending
	if _, err := f.svc.Complete(ctx, "42", code); !errors.Is(err, connectflow.ErrConnectCodeInvalid) {
		t.Errorf("retry with the spent code = %v, want ErrConnectCodeInvalid", err)
	}
	after, err := f.svc.Store.Get(ctx, "42")
	if err != nil || after.RefreshToken != before.RefreshToken || after.ETag != before.ETag {
		t.Errorf("the earlier connection changed: %v %v", after, err)
	}
	if got := ev.types(); len(got) != 1 {
		t.Errorf("events %v, want only the first connect's", got)
	}
}
