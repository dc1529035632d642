package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

const adaOID = "5d2f4c3b-7a8e-4f1d-9c6b-2e3a4b5c6d7e"

// startWith runs the stack with the stand-in's token lifetime and an
// outgoing HTTP client of our choosing.
func startWith(t *testing.T, expiresIn time.Duration, hc *http.Client, settings map[string]string) *stack {
	t.Helper()
	return startStack(t, devstack.Options{Settings: settings, IdentityExpiresIn: expiresIn, HTTPClient: hc})
}

// startStack runs the stack with o (its Logs and WithoutCMS are set here).
func startStack(t *testing.T, o devstack.Options) *stack {
	t.Helper()
	if os.Getenv("SKIP_AZURITE") == "1" {
		t.Skip("SKIP_AZURITE=1")
	}
	logs := &logtest.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o.Logs, o.WithoutCMS = logs, true
	s, err := devstack.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	mode := "direct"
	if viaHost != nil {
		mode = "via-host"
		host := strings.TrimPrefix(s.HandlerURL, "http://")
		viaHost.Forward(host)
		t.Cleanup(func() { viaHost.Stop(host) })
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("transport: %s (%s)\nlogs:\n%s", mode, transportEnv, logs.String())
		}
	})
	return &stack{Stack: s, logs: logs}
}

// stored reads a connection with its tokens, as the handler stores it.
func (s *stack) stored(t *testing.T, userID string) connection.Connection {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(s.Settings["TABLES_CONNECTION_STRING"], nil)
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) string { return s.Settings[k] }
	st := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(env))), tablestore.Options{Now: time.Now})
	c, err := st.Get(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *stack) token(t *testing.T, userID string) response {
	t.Helper()
	return s.cms(t, http.MethodPost, "/api/connections/"+url.PathEscape(userID)+"/token", nil)
}

func TestErrorClassesThroughTheTokenAPI(t *testing.T) {
	hc := &http.Client{Timeout: 700 * time.Millisecond}
	// One-second tokens on the stack's settable clock (the handler's and
	// the stand-in's): advancing it past a second expires the stored
	// token, so a failed refresh cannot fall back on it.
	clock := clocktest.New(time.Now())
	startClocked := func(t *testing.T) *stack {
		return startStack(t, devstack.Options{IdentityExpiresIn: time.Second, HTTPClient: hc, Now: clock.Now})
	}
	s := startClocked(t)

	cases := []struct {
		name       string
		fail       func()
		wantStatus int
		wantCode   string
		wantState  string
		// wantLastError: last_error.code of a reconnect_required
		// connection.
		wantLastError string
		retryAfter    string // "" any, else exact
		// requests: the calls to Microsoft's token endpoint the token
		// call makes (a retry is one more).
		requests int
		// pauses: throttling stops calls to the token endpoint for a
		// while (the instance's when instance, else the user's), so the
		// case needs a stack of its own.
		pauses, instance bool
	}{
		{"invalid_grant 700082 (inactivity)", func() {
			s.IDP.FailNext(1, devidp.OAuthError(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity.").WithSuberror("bad_token"))
		}, 409, "reconnect_required", "reconnect_required", "invalid_grant", "", 1, false, false},
		{"interaction_required 50076 (MFA)", func() {
			s.IDP.FailNext(1, devidp.OAuthError(400, "interaction_required", 50076, "Due to a configuration change made by your administrator, you must use multi-factor authentication."))
		}, 409, "reconnect_required", "reconnect_required", "interaction_required", "", 1, false, false},
		{"invalid_grant 50196 (loop detected = throttling)", func() {
			s.IDP.FailNext(1, devidp.OAuthError(400, "invalid_grant", 50196, "The server terminated an operation because it encountered a client request loop."))
		}, 503, "temporarily_unavailable", "connected", "", "", 1, true, false},
		{"invalid_client 7000215 twice (wrong secret, re-read and retried once)", func() {
			bad := devidp.OAuthError(401, "invalid_client", 7000215, "Invalid client secret provided.")
			s.IDP.FailNext(2, bad)
		}, 503, "not_configured", "connected", "", "", 2, false, false},
		{"500", func() {
			s.IDP.FailNext(1, devidp.Response{Status: 500, Body: []byte("<html>oops</html>")})
		}, 503, "temporarily_unavailable", "connected", "", "", 1, false, false},
		{"timeout", func() { s.IDP.SetLatency(1500 * time.Millisecond) }, 503, "temporarily_unavailable", "connected", "", "", 1, false, false},
		{"429 with Retry-After", func() { s.IDP.FailNext(1, devidp.Throttled(7*time.Second)) }, 503, "temporarily_unavailable", "connected", "", "7", 1, true, true},
	}
	shared := s
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s = shared
			if tc.pauses {
				s = startClocked(t)
			}
			user := "class-" + strconv.Itoa(i)
			s.connect(t, user, "ada@contoso.com")
			other := user + "-other"
			if tc.pauses {
				s.connect(t, other, "grace@contoso.com")
			}
			clock.Advance(1100 * time.Millisecond) // the access token expires
			before := s.IDP.TokenRequests("refresh_token")
			tc.fail()
			r := s.token(t, user)
			s.IDP.SetLatency(0)
			if got := s.IDP.TokenRequests("refresh_token") - before; got != tc.requests {
				t.Errorf("%d calls to the token endpoint, want %d", got, tc.requests)
			}
			if r.status != tc.wantStatus || r.errorCode(t) != tc.wantCode {
				t.Fatalf("token API: %d %s, want %d %s", r.status, r.body, tc.wantStatus, tc.wantCode)
			}
			if tc.wantStatus == 503 && r.header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if tc.retryAfter != "" && r.header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", r.header.Get("Retry-After"), tc.retryAfter)
			}
			st := s.cms(t, http.MethodGet, "/api/connections/"+user, nil).json(t)
			if st["status"] != tc.wantState {
				t.Errorf("status = %v, want %s", st["status"], tc.wantState)
			}
			if tc.wantState == "reconnect_required" {
				// Both keys present, code the stable one, at a time.
				le, _ := st["last_error"].(map[string]any)
				code, hasCode := le["code"].(string)
				at, _ := le["at"].(string)
				if _, err := time.Parse(time.RFC3339, at); !hasCode || code != tc.wantLastError || err != nil {
					t.Errorf("last_error = %v, want {code: %s, at: <time>}", st["last_error"], tc.wantLastError)
				}
			}
			if tc.pauses {
				// A 429 pauses every refresh of the instance; AADSTS50196
				// only this user's (throttle_test.go has the details).
				n := s.IDP.TokenRequests("refresh_token")
				if r := s.token(t, user); r.status != 503 {
					t.Errorf("the same user during the pause: %d %s", r.status, r.body)
				}
				if got := s.IDP.TokenRequests("refresh_token"); got != n {
					t.Errorf("%d token requests for the paused user, want 0", got-n)
				}
				r := s.token(t, other)
				if tc.instance && r.status != 503 || !tc.instance && r.status != 200 {
					t.Errorf("another user during the pause: %d %s", r.status, r.body)
				}
				if len(s.logs.Events("throttled")) == 0 {
					t.Error("no throttled log line")
				}
			}
		})
	}
	s = shared
	classes := map[string]bool{}
	for _, e := range s.logs.Events("refresh_failed") {
		classes[e["class"].(string)] = true
		if e["user_id"] == nil {
			t.Errorf("refresh_failed without user_id: %v", e)
		}
	}
	for _, c := range []string{"reconnect_required", "configuration", "transient"} {
		if !classes[c] {
			t.Errorf("no refresh_failed line with class %s", c)
		}
	}
}

func TestStillValidTokenSurvivesTransientFailure(t *testing.T) {
	s := startWith(t, 4*time.Minute, nil, nil) // inside the margin: always refreshed, never expired
	s.connect(t, "u", "ada@contoso.com")
	first := s.token(t, "u").json(t)["access_token"]
	s.IDP.FailNext(1, devidp.Response{Status: 503, Body: []byte("busy")})
	r := s.token(t, "u")
	if r.status != http.StatusOK {
		t.Fatalf("token API: %d %s", r.status, r.body)
	}
	if r.json(t)["access_token"] != first {
		t.Error("did not return the still-valid stored token")
	}
}

func TestInvalidClientOnceIsRetriedWithTheSecretReadAgain(t *testing.T) {
	s := startWith(t, time.Minute, nil, nil)
	s.connect(t, "u", "ada@contoso.com")
	before := s.IDP.TokenRequests("refresh_token")
	s.IDP.FailNext(1, devidp.OAuthError(401, "invalid_client", 7000215, "Invalid client secret provided."))
	if r := s.token(t, "u"); r.status != http.StatusOK {
		t.Fatalf("token API: %d %s", r.status, r.body)
	}
	if got := s.IDP.TokenRequests("refresh_token") - before; got != 2 {
		t.Errorf("token requests = %d, want 2 (the failure and one retry)", got)
	}
}

func TestRevokedAccountBecomesReconnectRequiredAndRecovers(t *testing.T) {
	hook := newWebhook(t)
	s := startWith(t, time.Minute, nil, map[string]string{"CMS_WEBHOOK_URL": hook.URL, "CMS_WEBHOOK_SECRET": "hook-secret"})
	s.connect(t, "u", "ada@contoso.com")
	if err := s.IDP.RevokeAccount(adaOID); err != nil {
		t.Fatal(err)
	}
	if r := s.token(t, "u"); r.status != http.StatusConflict || r.errorCode(t) != "reconnect_required" {
		t.Fatalf("token after revoke: %d %s", r.status, r.body)
	}
	n := s.IDP.TokenRequests("refresh_token")
	for i := 0; i < 3; i++ {
		if r := s.token(t, "u"); r.status != http.StatusConflict {
			t.Errorf("token: %d", r.status)
		}
	}
	if s.IDP.TokenRequests("refresh_token") != n {
		t.Error("a reconnect_required connection was refreshed again")
	}
	l := s.cms(t, http.MethodGet, "/api/connections?status=reconnect_required", nil).json(t)
	if conns := l["connections"].([]any); len(conns) != 1 || conns[0].(map[string]any)["user_id"] != "u" {
		t.Errorf("listing reconnect_required: %v", l)
	}
	// The user connects again: recovered.
	s.connect(t, "u", "ada@contoso.com")
	if r := s.token(t, "u"); r.status != http.StatusOK {
		t.Errorf("token after reconnect: %d %s", r.status, r.body)
	}
	s.cms(t, http.MethodDelete, "/api/connections/u", nil)

	want := []string{"connection.connected", "connection.reconnect_required", "connection.recovered", "connection.disconnected"}
	// Deliveries run in parallel from the queue: the contract promises
	// each event, not their order (the CMS orders by "at" and reads the
	// status for the current truth).
	arrived := hook.wait(t, len(want))
	byType := map[any]delivered{}
	for _, ev := range arrived {
		if _, dup := byType[ev.body["type"]]; dup {
			t.Errorf("event %v delivered twice", ev.body["type"])
		}
		byType[ev.body["type"]] = ev
	}
	got := make([]delivered, len(want))
	for i, typ := range want {
		got[i] = byType[typ]
	}
	ids := map[string]bool{}
	for i, ev := range got {
		if ev.body["type"] != want[i] {
			t.Errorf("event %d = %v, want %s", i, ev.body["type"], want[i])
		}
		for _, k := range []string{"type", "user_id", "at", "account", "reason"} {
			if _, ok := ev.body[k]; !ok {
				t.Errorf("event %s lacks key %s", want[i], k)
			}
		}
		if ev.body["user_id"] != "u" {
			t.Errorf("event user_id = %v", ev.body["user_id"])
		}
		if want[i] == "connection.reconnect_required" && ev.body["reason"] != "invalid_grant" {
			t.Errorf("reconnect_required reason = %v", ev.body["reason"])
		} else if want[i] != "connection.reconnect_required" && ev.body["reason"] != nil {
			t.Errorf("%s reason = %v, want null", want[i], ev.body["reason"])
		}
		if ev.signature != events.Sign("hook-secret", ev.raw) {
			t.Errorf("event %s: signature %q does not verify", want[i], ev.signature)
		}
		if ev.delivery == "" || ids[ev.delivery] {
			t.Errorf("delivery id %q missing or repeated", ev.delivery)
		}
		ids[ev.delivery] = true
	}
}

type delivered struct {
	raw                 []byte
	body                map[string]any
	signature, delivery string
}

type webhook struct {
	*httptest.Server
	mu  sync.Mutex
	got []delivered
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		w.mu.Lock()
		w.got = append(w.got, delivered{b, m, r.Header.Get("X-MEGDocs-Signature"), r.Header.Get("X-MEGDocs-Delivery")})
		w.mu.Unlock()
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhook) wait(t *testing.T, n int) []delivered {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		if len(w.got) >= n {
			out := append([]delivered(nil), w.got...)
			w.mu.Unlock()
			return out
		}
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("webhook got %d events, want %d", len(w.got), n)
	return nil
}

// timer posts the host's golden timer invocation to POST /refresh.
func (s *stack) timer(t *testing.T) (map[string]any, response) {
	t.Helper()
	payload, err := os.ReadFile("../funchost/testdata/timer_request.json")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.HandlerURL+"/refresh", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "5f0e1a8c-3b1d-4c47-9f5e-0d2a7b6c9e11")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1036.1.23224")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{resp.StatusCode, resp.Header, b}
	if r.status != http.StatusOK {
		t.Fatalf("POST /refresh: %d %s", r.status, b)
	}
	body := r.json(t)
	if _, ok := body["Outputs"].(map[string]any); !ok {
		t.Errorf("Outputs = %v", body["Outputs"])
	}
	if _, ok := body["Logs"].([]any); !ok {
		t.Errorf("Logs = %v", body["Logs"])
	}
	rv, _ := body["ReturnValue"].(map[string]any)
	for _, k := range []string{"due", "refreshed", "reconnect_required", "transient_failures", "skipped", "duration_ms"} {
		if _, ok := rv[k]; !ok {
			t.Errorf("ReturnValue lacks %s: %s", k, b)
		}
	}
	return rv, r
}

func TestTimerSweepsThroughTheHostPayload(t *testing.T) {
	// Ten-minute tokens: within REFRESH_LOOKAHEAD for connections used in
	// the last hour, so every fresh connection is due for the sweep.
	s := startWith(t, 9*time.Minute, nil, nil)
	for _, u := range []string{"s1", "s2", "s3"} {
		s.connect(t, u, "ada@contoso.com")
	}
	s.connect(t, "dead", "grace@contoso.com")
	if err := s.IDP.RevokeAccount("8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d"); err != nil {
		t.Fatal(err)
	}
	// Refreshed tokens live an hour: no longer due after the sweep.
	s.IDP.SetExpiresIn(time.Hour)
	rv, _ := s.timer(t)
	if rv["due"] != 4.0 || rv["refreshed"] != 3.0 || rv["reconnect_required"] != 1.0 || rv["transient_failures"] != 0.0 {
		t.Errorf("summary = %v", rv)
	}
	if st := s.cms(t, http.MethodGet, "/api/connections/dead", nil).json(t); st["status"] != "reconnect_required" {
		t.Errorf("dead = %v", st["status"])
	}
	swept := s.logs.Events("refresh_swept")
	if len(swept) != 1 || swept[0]["connections_total"] != 4.0 {
		t.Errorf("refresh_swept lines = %v", swept)
	}
	if swept[0]["invocation_id"] != "5f0e1a8c-3b1d-4c47-9f5e-0d2a7b6c9e11" {
		t.Errorf("refresh_swept does not name its invocation: %v", swept[0])
	}
	// Swept connections are no longer due; the dead one is never retried.
	n := s.IDP.TokenRequests("refresh_token")
	rv, _ = s.timer(t)
	if rv["due"] != 0.0 || s.IDP.TokenRequests("refresh_token") != n {
		t.Errorf("second sweep = %v, %d new token requests", rv, s.IDP.TokenRequests("refresh_token")-n)
	}
}

func TestTimerStopsOnConfigurationError(t *testing.T) {
	s := startWith(t, 9*time.Minute, nil, map[string]string{"REFRESH_CONCURRENCY": "1"})
	for i := 0; i < 5; i++ {
		s.connect(t, "cfg"+strconv.Itoa(i), "ada@contoso.com")
	}
	n := s.IDP.TokenRequests("refresh_token")
	s.IDP.FailNext(100, devidp.OAuthError(401, "invalid_client", 7000222, "The provided client secret keys for app are expired."))
	rv, _ := s.timer(t)
	// One refresh, its one retry after re-reading the secret, then stop.
	if got := s.IDP.TokenRequests("refresh_token") - n; got != 2 {
		t.Errorf("token requests = %d, want 2: the sweep must stop after a configuration error", got)
	}
	if rv["refreshed"] != 0.0 || rv["reconnect_required"] != 0.0 || rv["skipped"].(float64) < 4 {
		t.Errorf("summary = %v", rv)
	}
	for i := 0; i < 5; i++ {
		if st := s.cms(t, http.MethodGet, "/api/connections/cfg"+strconv.Itoa(i), nil).json(t); st["status"] != "connected" {
			t.Errorf("a user was blamed for a configuration error: %v", st)
		}
	}
}

func TestParallelTokenCallsAndSweepRefreshOnce(t *testing.T) {
	s := startWith(t, 4*time.Minute, nil, nil) // due for both the token API and the sweep
	s.connect(t, "hot", "ada@contoso.com")
	s.IDP.SetLatency(200 * time.Millisecond) // keep the refresh in flight while others arrive
	n := s.IDP.TokenRequests("refresh_token")

	var wg sync.WaitGroup
	tokens := make([]string, 50)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.token(t, "hot")
			if r.status != http.StatusOK {
				t.Errorf("token: %d %s", r.status, r.body)
				return
			}
			tokens[i], _ = r.json(t)["access_token"].(string)
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.timer(t) }()
	wg.Wait()
	s.IDP.SetLatency(0)

	if got := s.IDP.TokenRequests("refresh_token") - n; got != 1 {
		t.Errorf("refreshes = %d, want exactly 1 for 50 token calls and a sweep", got)
	}
	for i, tok := range tokens[1:] {
		if tok != tokens[0] {
			t.Errorf("caller %d got a different token", i+1)
		}
	}
	c := s.stored(t, "hot")
	if latest, _ := s.IDP.LatestRefreshToken(adaOID); c.RefreshToken != latest {
		t.Error("the stored refresh token is not the newest one Microsoft issued")
	}
}

func TestListingPagesEveryConnectionOnce(t *testing.T) {
	s := startWith(t, time.Hour, nil, nil)
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		u := "list-" + strconv.Itoa(i)
		s.connect(t, u, "ada@contoso.com")
		want[u] = true
	}
	seen := map[string]int{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("too many pages")
		}
		q := "/api/connections?limit=3&status=connected"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		r := s.cms(t, http.MethodGet, q, nil)
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", q, r.status, r.body)
		}
		body := r.json(t)
		conns := body["connections"].([]any)
		if len(conns) > 3 {
			t.Errorf("page of %d > limit 3", len(conns))
		}
		for _, c := range conns {
			seen[c.(map[string]any)["user_id"].(string)]++
		}
		nc, present := body["next_cursor"]
		if !present {
			t.Fatal("next_cursor missing")
		}
		if nc == nil {
			break
		}
		cursor = nc.(string)
	}
	for u := range want {
		if seen[u] != 1 {
			t.Errorf("%s seen %d times", u, seen[u])
		}
	}
	if r := s.cms(t, http.MethodGet, "/api/connections?status=reconnect_required", nil); r.status != 200 || len(r.json(t)["connections"].([]any)) != 0 || r.json(t)["next_cursor"] != nil {
		t.Errorf("filtered listing: %s", r.body)
	}
	for _, q := range []string{"status=bogus", "limit=0", "limit=1001", "limit=x", "cursor=not-ours", "cursor=" + url.QueryEscape(cursor+"x")} {
		if r := s.cms(t, http.MethodGet, "/api/connections?"+q, nil); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_request" {
			t.Errorf("?%s: %d %s", q, r.status, r.body)
		}
	}
}
