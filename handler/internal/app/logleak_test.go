package app_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// secretTap records every secret value that crosses the handler's outgoing
// HTTP client: what it sends to the identity platform and Graph
// (client_secret, code, code_verifier, refresh_token, bearer tokens) and
// what comes back (access, refresh and id tokens). The log-leak test then
// knows every value the handler held, not only those a CMS sees.
type secretTap struct {
	next http.RoundTripper

	mu     sync.Mutex
	values map[string]string // value -> what it is
}

func (s *secretTap) add(what, v string) {
	if len(v) < 8 { // too short to be a secret; would match ordinary text
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[v] = what
}

func (s *secretTap) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, w := range s.values {
		if w == what {
			n++
		}
	}
	return n
}

func (s *secretTap) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		if form, err := url.ParseQuery(string(b)); err == nil {
			for _, k := range []string{"client_secret", "client_assertion", "code", "code_verifier", "refresh_token"} {
				s.add(k, form.Get(k))
			}
		}
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		s.add("bearer", tok)
	}
	resp, err := s.next.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		for _, k := range []string{"access_token", "refresh_token", "id_token"} {
			if v, ok := m[k].(string); ok {
				s.add(k, v)
			}
		}
	}
	return resp, nil
}

// TestLogsCarryNoSecrets runs the real handler binary as a child process
// (what Azure runs: every byte it prints reaches the host's log stream)
// through a connect, a failed and a replayed callback, token calls that
// refresh, a timer sweep, webhook deliveries, a revoked account and a wrong
// CMS key, then scans the raw bytes of its stdout and stderr for every
// secret value of the run: settings secrets (client secret, encryption
// key, CMS keys, webhook secret), session tokens, states, state cookies,
// authorization codes, PKCE verifiers, connect codes, access, refresh and
// id tokens, the error description Microsoft sent, and the callback's
// query strings. The contract: none of them, nor any 16-character slice of
// one, is ever printed, by the logger or by anything else; stdout carries
// only the logger's JSON lines and stderr nothing.
func TestLogsCarryNoSecrets(t *testing.T) {
	tap := &secretTap{next: http.DefaultTransport.(*http.Transport).Clone(), values: map[string]string{}}
	// The child's calls to Microsoft (the stand-in) pass through this
	// proxy, which records every secret on the wire both ways.
	var idp atomic.Pointer[url.URL]
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			if u := idp.Load(); u != nil {
				r.SetURL(u)
			}
			r.Out.Host = r.In.Host // the stand-in's issuer is the host it is called on
		},
		Transport: tap,
	})
	t.Cleanup(proxy.Close)
	var hooks atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hooks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	bin, err := devstack.BuildHandler(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr logtest.Buffer
	// Tokens live 4 minutes: inside the 5-minute margin, so every token
	// call and the sweep refresh.
	s := startStack(t, devstack.Options{
		IdentityExpiresIn: 4 * time.Minute,
		Settings: map[string]string{
			"CMS_API_KEY_PREVIOUS":     "previous-cms-key-0123456789",
			"CMS_WEBHOOK_URL":          hook.URL,
			"CMS_WEBHOOK_SECRET":       "webhook-secret-" + rand.Text(),
			"MICROSOFT_AUTHORITY_HOST": proxy.URL,
			"MICROSOFT_GRAPH_URL":      proxy.URL,
		},
		HandlerBinary: bin, HandlerStdout: &stdout, HandlerStderr: &stderr,
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the handler's stdout:\n%s\nits stderr:\n%s", stdout.String(), stderr.String())
		}
	})
	target, err := url.Parse(s.IdentityURL)
	if err != nil {
		t.Fatal(err)
	}
	idp.Store(target)
	for _, k := range []string{"MICROSOFT_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY", "CMS_API_KEY", "CMS_API_KEY_PREVIOUS", "CMS_WEBHOOK_SECRET"} {
		if s.Settings[k] == "" {
			t.Fatalf("no %s in the run's settings", k)
		}
		tap.add(k, s.Settings[k])
	}
	// The Table Storage account key inside the connection string.
	for _, part := range strings.Split(s.Settings["TABLES_CONNECTION_STRING"], ";") {
		if key, ok := strings.CutPrefix(part, "AccountKey="); ok {
			tap.add("tables_account_key", key)
		}
	}
	wrongKey := "wrong-cms-key-9876543210"
	description := "AADSTS65004: User Ada Lovelace declined to consent (trace 0badc0ffee)"
	tap.add("error_description", description)
	var queries []string

	// connect runs the flow by hand so every bearer value the browser
	// carries is known; it returns the callback URL.
	connect := func(userID, account string) *url.URL {
		r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": userID, "return_url": returnURL, "login_hint": account})
		if r.status != http.StatusCreated {
			t.Fatalf("connect-sessions: %d %s", r.status, r.body)
		}
		link, _ := url.Parse(r.json(t)["connect_url"].(string))
		tap.add("session", link.Query().Get("session"))
		b := newBrowser(t)
		resp := do(t, b.Client, http.MethodGet, link.String(), "", nil)
		if resp.status != http.StatusFound {
			t.Fatalf("connect: %d %s", resp.status, resp.body)
		}
		for _, c := range (&http.Response{Header: resp.header}).Cookies() {
			tap.add("state_cookie", c.Value)
		}
		auth, _ := url.Parse(resp.header.Get("Location"))
		tap.add("state", auth.Query().Get("state"))
		cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), account)
		if err != nil {
			t.Fatal(err)
		}
		tap.add("code", cb.Query().Get("code"))
		queries = append(queries, cb.RawQuery)
		r = do(t, b.Client, http.MethodGet, cb.String(), "", nil)
		if r.status != http.StatusFound {
			t.Fatalf("callback: %d %s", r.status, r.body)
		}
		back, _ := url.Parse(r.header.Get("Location"))
		code := connectCode(t, back)
		tap.add("connect_code", code)
		queries = append(queries, back.RawQuery)
		// v2: the CMS completes, here as the user who started it.
		if r := s.complete(t, userID, code); r.status != http.StatusOK {
			t.Fatalf("complete: %d %s", r.status, r.body)
		}
		// A replay of the spent code (400) carries it again.
		s.complete(t, userID, code)
		return cb
	}

	cb := connect("leak-check", "ada@contoso.com")
	// A completion by another CMS user (409 user_mismatch, oauth_failed):
	// the line names both users, never the code or the tokens.
	if code := connectCode(t, s.signIn(t, "started-by", "grace@contoso.com")); code != "" {
		tap.add("connect_code", code)
		if r := s.complete(t, "someone-else", code); r.status != http.StatusConflict {
			t.Fatalf("mismatched complete: %d %s", r.status, r.body)
		}
	}
	// A replay (400 page) and a stranger's callback carry the code in the
	// query: neither may reach the log.
	do(t, noRedirect, http.MethodGet, cb.String(), "", nil)
	// Microsoft's error with a description naming the user.
	b := newBrowser(t)
	r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": "declined", "return_url": returnURL})
	link, _ := url.Parse(r.json(t)["connect_url"].(string))
	tap.add("session", link.Query().Get("session"))
	auth := b.begin(t, link.String())
	tap.add("state", auth.Query().Get("state"))
	q := url.Values{"error": {"access_denied"}, "error_description": {description}, "state": {auth.Query().Get("state")}}.Encode()
	queries = append(queries, q)
	if r := do(t, b.Client, http.MethodGet, s.HandlerURL+"/api/callback?"+q, "", nil); r.status != http.StatusFound {
		t.Fatalf("error callback: %d %s", r.status, r.body)
	}
	// A failed exchange.
	s.IDP.FailNext(1, devidp.OAuthError(http.StatusBadRequest, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed."))
	b = newBrowser(t)
	r = s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": "exchange-fails", "return_url": returnURL})
	link, _ = url.Parse(r.json(t)["connect_url"].(string))
	tap.add("session", link.Query().Get("session"))
	auth = b.begin(t, link.String())
	fcb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), "grace@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	tap.add("code", fcb.Query().Get("code"))
	queries = append(queries, fcb.RawQuery)
	do(t, b.Client, http.MethodGet, fcb.String(), "", nil)

	// Token calls (each refreshes), a sweep, a wrong key.
	for range 2 {
		r := s.token(t, "leak-check")
		if r.status != http.StatusOK {
			t.Fatalf("token: %d %s", r.status, r.body)
		}
		tap.add("access_token", r.json(t)["access_token"].(string))
	}
	s.timer(t)
	do(t, noRedirect, http.MethodGet, s.HandlerURL+"/api/connections/leak-check", wrongKey, nil)
	tap.add("wrong_cms_key", wrongKey)
	// The account is revoked: the next refresh fails for good.
	if err := s.IDP.RevokeAccount(adaOID); err != nil {
		t.Fatal(err)
	}
	if r := s.token(t, "leak-check"); r.status != http.StatusConflict {
		t.Fatalf("token after revocation: %d %s", r.status, r.body)
	}

	// The run must have held every kind of secret, or the scan proves
	// nothing.
	for what, atLeast := range map[string]int{
		"client_secret": 1, "code": 2, "code_verifier": 2, "refresh_token": 3, "access_token": 3,
		"id_token": 1, "session": 3, "state": 2, "state_cookie": 1, "bearer": 1, "connect_code": 2, "tables_account_key": 1,
	} {
		if n := tap.count(what); n < atLeast {
			t.Errorf("the run saw %d %s values, want at least %d", n, what, atLeast)
		}
	}
	// Deliveries go through the Storage queue and the local queue trigger
	// (polling up to 2 s): wait for one, boundedly, before stopping.
	for deadline := time.Now().Add(30 * time.Second); hooks.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if hooks.Load() == 0 {
		t.Error("no webhook was delivered within 30 s: the webhook secret was never used")
	}
	// Stop the child so everything it prints, to its last line, is read.
	s.Stop()
	tap.mu.Lock()
	secrets := maps.Clone(tap.values)
	tap.mu.Unlock()
	for _, stream := range []struct {
		name string
		out  []byte
	}{{"stdout", []byte(stdout.String())}, {"stderr", []byte(stderr.String())}} {
		for _, leak := range findSecrets(stream.out, secrets) {
			t.Errorf("the handler's %s carries %s", stream.name, leak)
		}
		// A query string mixes public and secret parts (the secret
		// parts are in secrets): only the whole is matched.
		for _, q := range queries {
			if bytes.Contains(stream.out, []byte(q)) {
				t.Errorf("the handler's %s carries a callback query string: %s", stream.name, q)
			}
		}
	}
	if stderr.String() != "" {
		t.Errorf("the handler wrote to stderr (only a fatal error may):\n%s", stderr.String())
	}

	events := map[string]bool{}
	lines := 0
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("the handler printed a line that is not the logger's JSON: %q", line)
			continue
		}
		lines++
		// Contract "Logs": every line has an event field, a stable
		// lower_snake_case name.
		ev, _ := m["event"].(string)
		if !eventName.MatchString(ev) {
			t.Errorf("a log line without a lower_snake_case event: %q", line)
			continue
		}
		events[ev] = true
	}
	for _, ev := range []string{"connect_session_created", "connect_started", "connected", "oauth_failed", "refreshed", "refresh_swept", "refresh_failed", "request"} {
		if !events[ev] {
			t.Errorf("no %q line: the scan did not cover that path", ev)
		}
	}
	if lines < 20 {
		t.Errorf("only %d handler log lines", lines)
	}
}

var eventName = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// leakWindow is the length of the slices of a secret that may not be
// printed either: half a refresh token is still a leak.
const leakWindow = 16

// findSecrets reports every place out carries a secret (value -> what it
// is) whole or any leakWindow-character slice of one (of the secrets at
// least that long), once per secret.
func findSecrets(out []byte, secrets map[string]string) []string {
	windows := map[string]string{} // slice -> the secret it is from
	var short []string
	for v := range secrets {
		if len(v) < leakWindow {
			short = append(short, v)
			continue
		}
		for i := 0; i+leakWindow <= len(v); i++ {
			windows[v[i:i+leakWindow]] = v
		}
	}
	seen := map[string]bool{}
	var leaks []string
	report := func(v string, at int) {
		if seen[v] {
			return
		}
		seen[v] = true
		line := out[max(0, bytes.LastIndexByte(out[:at], '\n')+1):]
		if end := bytes.IndexByte(line, '\n'); end >= 0 {
			line = line[:end]
		}
		leaks = append(leaks, fmt.Sprintf("a %s (or a %d-character slice of one) at byte %d: %s", secrets[v], leakWindow, at, line))
	}
	for j := 0; j+leakWindow <= len(out); j++ {
		if v, ok := windows[string(out[j:j+leakWindow])]; ok {
			report(v, j)
		}
	}
	for _, v := range short {
		if at := bytes.Index(out, []byte(v)); at >= 0 {
			report(v, at)
		}
	}
	return leaks
}
