package connectflow_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

// The connect flow's security properties, tested on the service itself
// (memstore, a fake Microsoft, a settable clock): lifetimes, what reaches
// the store, and the PKCE binding.

// identity is Microsoft: it remembers the verifier behind every authorize
// URL (by state) and what each exchange was sent.
type identity struct {
	mu        sync.Mutex
	verifiers map[string]string // state -> verifier
	exchanged []string          // verifiers sent with codes
}

func (f *identity) AuthCodeURL(state, verifier, loginHint string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verifiers[state] = verifier
	return "https://login.example.test/authorize?" + url.Values{"state": {state}, "login_hint": {loginHint}}.Encode()
}

func (f *identity) Exchange(_ context.Context, code, verifier string) (connection.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exchanged = append(f.exchanged, verifier)
	return connection.Grant{AccessToken: "at-" + code, RefreshToken: "rt-" + code, ExpiresAt: time.Now().Add(time.Hour),
		Account: connection.Account{ID: "oid", TenantID: "tid"}}, nil
}

func (f *identity) Profile(context.Context, string) (connection.Account, error) {
	return connection.Account{Email: "ada@contoso.com"}, nil
}

// recordingStore keeps every pending entry written, as the table would.
type recordingStore struct {
	*memstore.Store
	mu      sync.Mutex
	written []connection.Pending
}

func (r *recordingStore) PutPending(ctx context.Context, p connection.Pending) error {
	r.mu.Lock()
	r.written = append(r.written, p)
	r.mu.Unlock()
	return r.Store.PutPending(ctx, p)
}

type flow struct {
	svc   *connectflow.Service
	clock *clocktest.Clock
	idp   *identity
	store *recordingStore
}

func newFlow(t *testing.T) *flow {
	t.Helper()
	c := clocktest.New(time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC))
	mem := memstore.New(memstore.Options{Now: c.Now})
	store := &recordingStore{Store: mem}
	allow, err := connectflow.NewAllowlist([]string{"https://cms.example.test/settings/"})
	if err != nil {
		t.Fatal(err)
	}
	idp := &identity{verifiers: map[string]string{}}
	svc := &connectflow.Service{Store: mem, Pending: store, Identity: idp, Allowlist: allow, Events: connection.NopPublisher{},
		PublicBaseURL: "https://connector.example.test", Log: zerolog.Nop(), Now: c.Now}
	return &flow{svc: svc, clock: c, idp: idp, store: store}
}

// session creates a connect session and returns its bearer token.
func (f *flow) session(t *testing.T, userID string) string {
	t.Helper()
	s, err := f.svc.CreateSession(context.Background(), connectflow.SessionRequest{UserID: userID, ReturnURL: "https://cms.example.test/settings/", LoginHint: "ada@contoso.com"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(s.ConnectURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("session")
}

func stateOf(t *testing.T, b connectflow.Begin) string {
	t.Helper()
	u, err := url.Parse(b.AuthURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("state")
}

func TestConnectLinkLivesTenMinutes(t *testing.T) {
	f := newFlow(t)
	early, late := f.session(t, "early"), f.session(t, "late")
	f.clock.Advance(connectflow.SessionTTL - time.Second)
	if _, err := f.svc.BeginConnect(context.Background(), early); err != nil {
		t.Fatalf("link at 9m59s: %v", err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.svc.BeginConnect(context.Background(), late); !errors.Is(err, connectflow.ErrLinkInvalid) {
		t.Fatalf("link at 10m: err = %v, want ErrLinkInvalid", err)
	}
	if connectflow.SessionTTL != 10*time.Minute || connectflow.StateTTL != 10*time.Minute {
		t.Errorf("lifetimes %s / %s, contract says 10 minutes", connectflow.SessionTTL, connectflow.StateTTL)
	}
}

func TestStateLivesTenMinutes(t *testing.T) {
	f := newFlow(t)
	ctx := context.Background()
	b, err := f.svc.BeginConnect(ctx, f.session(t, "42"))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(connectflow.StateTTL)
	_, err = f.svc.HandleCallback(ctx, connectflow.Callback{Code: "c", State: stateOf(t, b), Cookie: b.Cookie})
	if !errors.Is(err, connectflow.ErrStateInvalid) {
		t.Fatalf("callback at 10m: err = %v, want ErrStateInvalid", err)
	}
	if _, err := f.svc.Store.Get(ctx, "42"); !errors.Is(err, connection.ErrNotFound) {
		t.Errorf("an expired state stored a connection: %v", err)
	}
	if len(f.idp.exchanged) != 0 {
		t.Errorf("an expired state redeemed a code")
	}
}

// TestOnlyHashesOfBearerTokensAreStored: the session token, the state and
// the browser cookie each carry 256 random bits, are distinct, and reach
// the store only as their SHA-256 (a dump of the table cannot be replayed
// as a link, a state or a cookie).
func TestOnlyHashesOfBearerTokensAreStored(t *testing.T) {
	f := newFlow(t)
	ctx := context.Background()
	tok := f.session(t, "42")
	b, err := f.svc.BeginConnect(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	state := stateOf(t, b)
	bearers := map[string]string{"session": tok, "state": state, "cookie": b.Cookie}
	seen := map[string]bool{}
	for name, v := range bearers {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(raw) != 32 {
			t.Errorf("%s %q: %d bytes of randomness (%v), want 32 (256 bits; the contract asks at least 128)", name, v, len(raw), err)
		}
		if seen[v] {
			t.Errorf("%s reuses another bearer value", name)
		}
		seen[v] = true
	}
	if len(f.store.written) != 2 {
		t.Fatalf("%d pending entries written, want the session and the state", len(f.store.written))
	}
	for _, p := range f.store.written {
		fields := []string{p.ID, p.UserID, p.ReturnURL, p.LoginHint, p.Verifier, p.BrowserHash, p.ETag}
		for name, v := range bearers {
			for _, field := range fields {
				if strings.Contains(field, v) {
					t.Errorf("the %s entry holds the %s in clear: %v", p.Kind, name, p)
				}
			}
		}
	}
	sess, st := f.store.written[0], f.store.written[1]
	if sess.ID != sha(tok) || st.ID != sha(state) || st.BrowserHash != sha(b.Cookie) {
		t.Errorf("entries are not keyed by the SHA-256 of their bearer values: %v %v", sess, st)
	}
}

// TestExchangeUsesTheStatesVerifier: each state has its own PKCE verifier
// (RFC 7636: 43+ characters of high entropy), and the code is redeemed with
// exactly the verifier of the state it came back with.
func TestExchangeUsesTheStatesVerifier(t *testing.T) {
	f := newFlow(t)
	ctx := context.Background()
	b1, err := f.svc.BeginConnect(ctx, f.session(t, "one"))
	if err != nil {
		t.Fatal(err)
	}
	b2, err := f.svc.BeginConnect(ctx, f.session(t, "two"))
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := stateOf(t, b1), stateOf(t, b2)
	v1, v2 := f.idp.verifiers[s1], f.idp.verifiers[s2]
	if len(v1) < 43 || v1 == v2 || v1 == s1 || v1 == b1.Cookie {
		t.Fatalf("verifiers %q / %q: want distinct, at least 43 characters, unrelated to state and cookie", v1, v2)
	}
	if _, err := f.svc.HandleCallback(ctx, connectflow.Callback{Code: "c2", State: s2, Cookie: b2.Cookie}); err != nil {
		t.Fatal(err)
	}
	if len(f.idp.exchanged) != 1 || f.idp.exchanged[0] != v2 {
		t.Errorf("exchanged with %q, want the second state's verifier", f.idp.exchanged)
	}
	// The other browser's cookie does not complete the first state.
	if _, err := f.svc.HandleCallback(ctx, connectflow.Callback{Code: "c1", State: s1, Cookie: b2.Cookie}); !errors.Is(err, connectflow.ErrStateInvalid) {
		t.Errorf("state one with browser two's cookie: err = %v", err)
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// lostResponseStore stores the first pending entry of each kind and then
// answers ErrConflict, as Table Storage does when the insert landed, its
// response was lost (a timeout) and the SDK's retry of the same insert
// found the entity already there.
type lostResponseStore struct {
	*memstore.Store
	mu   sync.Mutex
	lost map[connection.PendingKind]bool
}

func (l *lostResponseStore) PutPending(ctx context.Context, p connection.Pending) error {
	if err := l.Store.PutPending(ctx, p); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lost[p.Kind] {
		l.lost[p.Kind] = true
		return fmt.Errorf("tablestore: put pending: %w: 409 EntityAlreadyExists on the retry", connection.ErrConflict)
	}
	return nil
}

// TestLostInsertResponseIsNotAFailure: a session or state insert whose
// response was lost comes back as a conflict on an ID of 256 random bits,
// which only our own first attempt can have taken. The flow stores the
// entry again under a fresh token instead of failing (a 500 to the CMS, or
// a burnt link and an error page for the user), and the token it hands out
// is the one that works.
func TestLostInsertResponseIsNotAFailure(t *testing.T) {
	f := newFlow(t)
	lossy := &lostResponseStore{Store: f.store.Store, lost: map[connection.PendingKind]bool{}}
	f.svc.Pending = lossy
	ctx := context.Background()
	tok := f.session(t, "42")
	b, err := f.svc.BeginConnect(ctx, tok)
	if err != nil {
		t.Fatalf("BeginConnect with the token CreateSession returned: %v", err)
	}
	to, err := f.svc.HandleCallback(ctx, connectflow.Callback{Code: "c", State: stateOf(t, b), Cookie: b.Cookie})
	if err != nil || !strings.Contains(to, "microsoft=signed_in") {
		t.Fatalf("HandleCallback = %q, %v", to, err)
	}
	if _, err := f.svc.Complete(ctx, "42", connectCode(t, to)); err != nil {
		t.Fatalf("Complete with the connect code HandleCallback returned: %v", err)
	}
	for _, kind := range []connection.PendingKind{connection.PendingSession, connection.PendingState, connection.PendingConnect} {
		if !lossy.lost[kind] {
			t.Fatalf("the store did not lose a response for kind %s: %v", kind, lossy.lost)
		}
	}
}

// connectCode reads the connect code off the callback's redirect.
func connectCode(t *testing.T, to string) string {
	t.Helper()
	u, err := url.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("microsoft") != "signed_in" || q.Get("connect_code") == "" {
		t.Fatalf("callback sent the browser to %s, want microsoft=signed_in&connect_code=...", to)
	}
	return q.Get("connect_code")
}
