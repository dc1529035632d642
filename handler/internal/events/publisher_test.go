package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
)

// watchdog bounds every wait in these tests. It only turns a deadlock into
// a failure; no test asserts how fast anything happens.
const watchdog = 10 * time.Second

const testSecret = "whsec-test-3f9a"

// logSink collects zerolog's JSON lines and lets a test wait for one.
type logSink struct {
	mu      sync.Mutex
	raw     []string
	lines   []map[string]any
	changed chan struct{}
}

func newLogSink() *logSink { return &logSink{changed: make(chan struct{})} }

func (s *logSink) Write(b []byte) (int, error) {
	var m map[string]any
	_ = json.Unmarshal(b, &m) // a non-JSON line fails assertions through raw
	s.mu.Lock()
	s.raw = append(s.raw, string(b))
	s.lines = append(s.lines, m)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return len(b), nil
}

// with returns the lines whose message is msg and whose fields include want.
func (s *logSink) with(msg string, want map[string]any) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
next:
	for _, l := range s.lines {
		if l["message"] != msg {
			continue
		}
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// wait returns the first line with message msg and fields want, failing
// the test if none appears within the watchdog.
func (s *logSink) wait(t *testing.T, msg string, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.After(watchdog)
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if ls := s.with(msg, want); len(ls) > 0 {
			return ls[0]
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s log line with %v; got:\n%s", msg, want, strings.Join(s.all(), ""))
		}
	}
}

func (s *logSink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.raw...)
}

// assertNoSecret fails if any log line carries the webhook secret.
func (s *logSink) assertNoSecret(t *testing.T, secrets ...string) {
	t.Helper()
	for _, l := range s.all() {
		for _, sec := range secrets {
			if strings.Contains(l, sec) {
				t.Errorf("log line carries a secret: %s", l)
			}
		}
	}
}

// received is one request the fake CMS got.
type received struct {
	header http.Header
	body   []byte
	method string
}

// cms is a fake CMS webhook endpoint on 127.0.0.1.
type cms struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []received
	arrived chan received // every request, as it arrives (buffered)
	// respond decides the answer to the n-th request (1-based); it may
	// block (a hanging CMS) and must honour r.Context().
	respond func(n int, r *http.Request, got received) int
}

func newCMS(t *testing.T, respond func(n int, r *http.Request, got received) int) *cms {
	t.Helper()
	c := &cms{arrived: make(chan received, 1000), respond: respond}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got := received{header: r.Header.Clone(), body: body, method: r.Method}
		c.mu.Lock()
		c.reqs = append(c.reqs, got)
		n := len(c.reqs)
		c.mu.Unlock()
		c.arrived <- got
		status := http.StatusNoContent
		if c.respond != nil {
			status = c.respond(n, r, got)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cms) requests() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.reqs...)
}

func (c *cms) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-c.arrived:
		return r
	case <-time.After(watchdog):
		t.Fatal("the CMS received no request")
		return received{}
	}
}

// newPublisher builds a publisher with fast retries against url, closing it
// when the test ends.
func newPublisher(t *testing.T, url string, logs *logSink, modify func(*Options)) *Publisher {
	t.Helper()
	o := Options{
		URL:        url,
		Secret:     func(context.Context) (string, error) { return testSecret, nil },
		Logger:     zerolog.New(logs),
		MinBackoff: time.Millisecond,
		MaxBackoff: 4 * time.Millisecond,
	}
	if modify != nil {
		modify(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), watchdog)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func closeOK(t *testing.T, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), watchdog)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestPublishDeliversSignedEvent(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	p := newPublisher(t, c.srv.URL+"/hooks/microsoft", logs, nil)

	ada := &connection.Account{ID: "oid-1", TenantID: "tid-1", Email: "ada@contoso.com", DisplayName: "Ada Lovelace"}
	p.Publish(Event{Type: TypeConnected, UserID: "42", At: at, Account: ada})

	got := c.next(t)
	if got.method != http.MethodPost {
		t.Errorf("method = %s, want POST", got.method)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	want := `{"type":"connection.connected","user_id":"42","at":"2026-11-25T23:35:00Z","account":{"id":"oid-1","tenant_id":"tid-1","email":"ada@contoso.com","display_name":"Ada Lovelace"},"reason":null}`
	if string(got.body) != want {
		t.Errorf("body:\n got %s\nwant %s", got.body, want)
	}
	if sig := got.header.Get(SignatureHeader); !Verify(testSecret, got.body, sig) {
		t.Errorf("signature %q does not verify", sig)
	}
	id := got.header.Get(DeliveryHeader)
	if !uuidV4.MatchString(id) {
		t.Errorf("%s = %q, want a v4 UUID", DeliveryHeader, id)
	}
	line := logs.wait(t, "webhook_delivered", map[string]any{"event_id": id})
	if line["user_id"] != "42" || line["attempts"] != 1.0 || line["status"] != 204.0 {
		t.Errorf("webhook_delivered line = %v, want user_id 42, attempts 1, status 204", line)
	}
	closeOK(t, p)
	logs.assertNoSecret(t, testSecret)
}

func TestDistinctEventsGetDistinctDeliveryIDs(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	p := newPublisher(t, c.srv.URL, logs, nil)
	const n = 50
	for range n {
		p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	}
	closeOK(t, p)
	seen := map[string]bool{}
	for _, r := range c.requests() {
		seen[r.header.Get(DeliveryHeader)] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct delivery ids for %d events", len(seen), n)
	}
}

func TestRetryResendsSameDeliveryAndBody(t *testing.T) {
	logs := newLogSink()
	statuses := []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusOK}
	c := newCMS(t, func(n int, _ *http.Request, _ received) int { return statuses[min(n, len(statuses))-1] })
	p := newPublisher(t, c.srv.URL, logs, nil)

	p.Publish(Event{Type: TypeReconnectRequired, UserID: "42", At: at, Reason: "invalid_grant"})
	first := c.next(t)
	id := first.header.Get(DeliveryHeader)
	logs.wait(t, "webhook_delivered", map[string]any{"event_id": id, "attempts": 3.0})

	reqs := c.requests()
	if len(reqs) != 3 {
		t.Fatalf("CMS got %d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if got := r.header.Get(DeliveryHeader); got != id {
			t.Errorf("request %d: delivery id %q, want %q", i+1, got, id)
		}
		if !bytes.Equal(r.body, first.body) {
			t.Errorf("request %d: body %s differs from the first %s", i+1, r.body, first.body)
		}
		if !Verify(testSecret, r.body, r.header.Get(SignatureHeader)) {
			t.Errorf("request %d: signature does not verify", i+1)
		}
	}
	retries := logs.with("webhook_retry", map[string]any{"event_id": id, "user_id": "42"})
	if len(retries) != 2 || retries[0]["status"] != 500.0 || retries[1]["status"] != 503.0 {
		t.Errorf("webhook_retry lines = %v, want two, with status 500 then 503", retries)
	}
	if len(logs.with("webhook_failed", nil)) != 0 {
		t.Error("a delivered event was also logged as failed")
	}
	logs.assertNoSecret(t, testSecret)
}

func TestRetrySignsWithRotatedSecret(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, func(n int, _ *http.Request, _ received) int {
		if n == 1 {
			return http.StatusUnauthorized // the CMS already has the new secret
		}
		return http.StatusOK
	})
	var calls atomic.Int32
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) {
		o.Secret = func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "old-secret", nil
			}
			return "new-secret", nil
		}
	})
	p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	logs.wait(t, "webhook_delivered", map[string]any{"user_id": "42", "attempts": 2.0})

	reqs := c.requests()
	if len(reqs) != 2 {
		t.Fatalf("CMS got %d requests, want 2", len(reqs))
	}
	if !Verify("old-secret", reqs[0].body, reqs[0].header.Get(SignatureHeader)) {
		t.Error("first attempt not signed with the secret of its time")
	}
	if !Verify("new-secret", reqs[1].body, reqs[1].header.Get(SignatureHeader)) ||
		Verify("old-secret", reqs[1].body, reqs[1].header.Get(SignatureHeader)) {
		t.Error("retry not signed with the rotated secret")
	}
	if !bytes.Equal(reqs[0].body, reqs[1].body) {
		t.Error("rotation changed the body")
	}
	logs.assertNoSecret(t, "old-secret", "new-secret")
}

func TestSecretFailureNeverSendsUnsigned(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	var calls atomic.Int32
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) {
		o.Secret = func(context.Context) (string, error) {
			switch calls.Add(1) {
			case 1:
				return "", errors.New("key vault: 403 forbidden")
			case 2:
				return "", nil
			default:
				return testSecret, nil
			}
		}
	})
	p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	logs.wait(t, "webhook_delivered", map[string]any{"user_id": "42", "attempts": 3.0})

	reqs := c.requests()
	if len(reqs) != 1 {
		t.Fatalf("CMS got %d requests, want only the signed one", len(reqs))
	}
	if !Verify(testSecret, reqs[0].body, reqs[0].header.Get(SignatureHeader)) {
		t.Error("the request that was sent is not signed")
	}
	retries := logs.with("webhook_retry", map[string]any{"user_id": "42"})
	if len(retries) != 2 {
		t.Fatalf("webhook_retry lines = %v, want 2", retries)
	}
	if e, _ := retries[0]["error"].(string); !strings.Contains(e, "webhook secret") || !strings.Contains(e, "403") {
		t.Errorf("first retry error = %q, want the secret read failure", e)
	}
	if e, _ := retries[1]["error"].(string); e != ErrEmptySecret.Error() {
		t.Errorf("second retry error = %q, want %q", e, ErrEmptySecret)
	}
}

func TestGivesUpAfterGiveUpAfter(t *testing.T) {
	logs := newLogSink()
	// The clock moves 5 minutes during each attempt: with GiveUpAfter 10
	// minutes, the failure at +5 is retried and the one at +10 (the
	// boundary) gives up. So exactly 2 attempts spanning 10 minutes.
	clock := clocktest.New(at)
	c := newCMS(t, func(int, *http.Request, received) int {
		clock.Advance(5 * time.Minute)
		return http.StatusBadGateway
	})
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) {
		o.Now = clock.Now
		o.GiveUpAfter = 10 * time.Minute
	})
	p.Publish(Event{ID: "evt-1", Type: TypeDisconnected, UserID: "42", At: at})

	line := logs.wait(t, "webhook_failed", map[string]any{"event_id": "evt-1"})
	if line["level"] != "error" || line["user_id"] != "42" || line["reason"] != "gave_up" {
		t.Errorf("webhook_failed line = %v, want level error, user_id 42, reason gave_up", line)
	}
	if line["attempts"] != 2.0 || line["elapsed_s"] != 600.0 {
		t.Errorf("webhook_failed attempts %v elapsed_s %v, want 2 and 600", line["attempts"], line["elapsed_s"])
	}
	if e, _ := line["error"].(string); !strings.Contains(e, "502") {
		t.Errorf("webhook_failed error = %q, want the last status", e)
	}
	closeOK(t, p)
	if n := len(c.requests()); n != 2 {
		t.Errorf("CMS got %d requests, want 2 (none after giving up)", n)
	}
}

// hangingCMS answers nothing until release is closed (or the request is
// cancelled).
func hangingCMS(t *testing.T) (c *cms, release func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	c = newCMS(t, func(_ int, r *http.Request, _ received) int {
		select {
		case <-ch:
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	// Registered after newCMS's own cleanup, so it runs first: the server
	// cannot close while a handler still hangs.
	t.Cleanup(release)
	return c, release
}

func TestPublishDoesNotBlockWhenCMSHangs(t *testing.T) {
	logs := newLogSink()
	c, release := hangingCMS(t)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) { o.Workers = 1; o.QueueSize = 10 })

	p.Publish(Event{Type: TypeConnected, UserID: "u0", At: at})
	c.next(t) // the only worker is now stuck in the CMS

	returned := make(chan struct{})
	go func() {
		for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
			p.Publish(Event{Type: TypeConnected, UserID: u, At: at})
		}
		close(returned)
	}()
	select {
	case <-returned: // every Publish returned while the CMS still hangs
	case <-time.After(watchdog):
		t.Fatal("Publish blocked on a hanging CMS")
	}
	release()
	closeOK(t, p)
	if n := len(logs.with("webhook_delivered", nil)); n != 6 {
		t.Errorf("%d events delivered after the CMS recovered, want 6", n)
	}
}

func TestQueueFullDropsAndLogs(t *testing.T) {
	logs := newLogSink()
	c, release := hangingCMS(t)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) { o.Workers = 1; o.QueueSize = 2 })

	p.Publish(Event{ID: "evt-a", Type: TypeConnected, UserID: "a", At: at})
	p.Publish(Event{ID: "evt-b", Type: TypeConnected, UserID: "b", At: at})
	p.Publish(Event{ID: "evt-c", Type: TypeReconnectRequired, UserID: "c", At: at, Reason: "invalid_grant"})

	line := logs.wait(t, "webhook_dropped", map[string]any{"event_id": "evt-c"})
	if line["level"] != "error" || line["user_id"] != "c" || line["reason"] != "queue_full" {
		t.Errorf("webhook_dropped line = %v, want level error, user_id c, reason queue_full", line)
	}
	if n := len(logs.with("webhook_dropped", nil)); n != 1 {
		t.Errorf("%d events dropped, want only the third", n)
	}
	release()
	closeOK(t, p)
	for _, r := range c.requests() {
		if r.header.Get(DeliveryHeader) == "evt-c" {
			t.Error("the dropped event was delivered")
		}
	}
	if n := len(c.requests()); n != 2 {
		t.Errorf("CMS got %d requests, want 2", n)
	}
}

func TestFailingEventDoesNotHoldUpOthers(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, func(_ int, _ *http.Request, got received) int {
		if bytes.Contains(got.body, []byte(`"user_id":"bad"`)) {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	// One worker and an hour of backoff: "good" can only be delivered if
	// "bad" waits for its retry outside the worker.
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) {
		o.Workers = 1
		o.MinBackoff, o.MaxBackoff = time.Hour, time.Hour
	})
	p.Publish(Event{Type: TypeConnected, UserID: "bad", At: at})
	p.Publish(Event{Type: TypeConnected, UserID: "good", At: at})
	logs.wait(t, "webhook_delivered", map[string]any{"user_id": "good"})
	retry := logs.wait(t, "webhook_retry", map[string]any{"user_id": "bad"})
	if ms, _ := retry["retry_in_ms"].(float64); ms < float64(30*time.Minute/time.Millisecond) {
		t.Errorf("retry_in_ms = %v, want at least half the 1 h backoff", ms)
	}

	// Close gives the waiting event one last attempt, then reports it.
	closeOK(t, p)
	line := logs.wait(t, "webhook_failed", map[string]any{"user_id": "bad"})
	if line["reason"] != "shutdown" || line["attempts"] != 2.0 {
		t.Errorf("webhook_failed line = %v, want reason shutdown after 2 attempts", line)
	}
}

func TestCloseDeliversQueuedEvents(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) { o.Workers = 2 })
	const n = 20
	for range n {
		p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	}
	closeOK(t, p)
	if got := len(c.requests()); got != n {
		t.Errorf("CMS got %d requests by the time Close returned, want %d", got, n)
	}
	p.Publish(Event{ID: "late", Type: TypeConnected, UserID: "42", At: at})
	line := logs.wait(t, "webhook_dropped", map[string]any{"event_id": "late"})
	if line["reason"] != "closed" {
		t.Errorf("Publish after Close: %v, want reason closed", line)
	}
	closeOK(t, p) // a second Close is harmless
}

func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	logs := newLogSink()
	c, _ := hangingCMS(t)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) { o.Workers = 1 })
	p.Publish(Event{ID: "in-flight", Type: TypeConnected, UserID: "a", At: at})
	p.Publish(Event{ID: "queued", Type: TypeConnected, UserID: "b", At: at})
	c.next(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	for _, id := range []string{"in-flight", "queued"} {
		line := logs.wait(t, "webhook_failed", map[string]any{"event_id": id})
		if line["reason"] != "shutdown" {
			t.Errorf("%s: %v, want reason shutdown", id, line)
		}
	}
	if n := len(c.requests()); n != 1 {
		t.Errorf("CMS got %d requests, want 1 (nothing sent after the abort)", n)
	}
}

func TestRedirectIsAFailureNotFollowed(t *testing.T) {
	logs := newLogSink()
	elsewhere := newCMS(t, nil)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.srv.URL, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)

	p := newPublisher(t, redirecting.URL, logs, nil)
	p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	line := logs.wait(t, "webhook_retry", map[string]any{"user_id": "42"})
	if line["status"] != 307.0 {
		t.Errorf("webhook_retry status = %v, want 307", line["status"])
	}
	closeOK(t, p)
	if n := len(elsewhere.requests()); n != 0 {
		t.Errorf("the redirect target got %d requests, want 0", n)
	}
}

func TestNetworkErrorLogDoesNotCarryURL(t *testing.T) {
	logs := newLogSink()
	gone := httptest.NewServer(http.NotFoundHandler())
	url := gone.URL + "/hook?token=url-credential-7c1d"
	gone.Close() // nothing listens there any more: connection refused

	p := newPublisher(t, url, logs, nil)
	p.Publish(Event{Type: TypeConnected, UserID: "42", At: at})
	line := logs.wait(t, "webhook_retry", map[string]any{"user_id": "42"})
	if e, _ := line["error"].(string); !strings.HasPrefix(e, "events: post: ") {
		t.Errorf("error = %q, want an events: post: error", e)
	}
	closeOK(t, p)
	logs.assertNoSecret(t, "url-credential-7c1d", testSecret)
}

func TestPublishDropsWhatItCannotSend(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) { o.Rand = bytes.NewReader(nil) })

	p.Publish(Event{Type: TypeConnected, UserID: "no-id", At: at})
	if line := logs.wait(t, "webhook_dropped", map[string]any{"user_id": "no-id"}); line["reason"] != "event_id" {
		t.Errorf("random source failure: %v, want reason event_id", line)
	}
	p.Publish(Event{ID: "bad-type", Type: "connection.renamed", UserID: "42", At: at})
	if line := logs.wait(t, "webhook_dropped", map[string]any{"event_id": "bad-type"}); line["reason"] != "invalid_event" {
		t.Errorf("unknown type: %v, want reason invalid_event", line)
	}
	closeOK(t, p)
	if n := len(c.requests()); n != 0 {
		t.Errorf("CMS got %d requests, want 0", n)
	}
}

func TestPublishDefaultsAtToNow(t *testing.T) {
	logs := newLogSink()
	c := newCMS(t, nil)
	p := newPublisher(t, c.srv.URL, logs, func(o *Options) {
		o.Now = func() time.Time { return time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC) }
	})
	p.Publish(Event{Type: TypeDisconnected, UserID: "42"})
	got := c.next(t)
	if !bytes.Contains(got.body, []byte(`"at":"2027-01-02T03:04:05Z"`)) {
		t.Errorf("body %s, want at from the injected clock", got.body)
	}
}

func TestNoopPublisher(t *testing.T) {
	logs := newLogSink()
	p, err := New(Options{Logger: zerolog.New(logs)}) // no URL: webhook off
	if err != nil {
		t.Fatalf("New without URL: %v", err)
	}
	var nilP *Publisher
	for _, p := range []*Publisher{p, nilP} {
		p.Publish(Event{Type: TypeConnected, UserID: "42"})
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if l := logs.all(); len(l) != 0 {
		t.Errorf("a disabled webhook logged %v", l)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	secret := func(context.Context) (string, error) { return "s", nil }
	tests := []struct {
		name string
		o    Options
	}{
		{"relative url", Options{URL: "/hooks", Secret: secret}},
		{"other scheme", Options{URL: "ftp://cms.example/hooks", Secret: secret}},
		{"no host", Options{URL: "https:///hooks", Secret: secret}},
		{"unparsable", Options{URL: "https://cms.example/%zz", Secret: secret}},
		{"no secret source", Options{URL: "https://cms.example/hooks"}},
		{"min above max", Options{URL: "https://cms.example/hooks", Secret: secret, MinBackoff: time.Minute, MaxBackoff: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.o)
			if err == nil {
				_ = p.Close(context.Background())
				t.Fatal("New: want an error")
			}
			if !strings.HasPrefix(err.Error(), "events: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	lowest := func(int64) int64 { return 0 }
	highest := func(k int64) int64 { return k - 1 }
	tests := []struct {
		retry    int
		min, max time.Duration
		lo, hi   time.Duration
	}{
		{1, 5 * time.Second, 2 * time.Minute, 2500 * time.Millisecond, 5 * time.Second},
		{2, 5 * time.Second, 2 * time.Minute, 5 * time.Second, 10 * time.Second},
		{5, 5 * time.Second, 2 * time.Minute, 40 * time.Second, 80 * time.Second},
		{6, 5 * time.Second, 2 * time.Minute, time.Minute, 2 * time.Minute},
		{1000, 5 * time.Second, 2 * time.Minute, time.Minute, 2 * time.Minute},
		{70, time.Second, 1<<63 - 1, (1<<63 - 1) / 2, 1<<63 - 1},
		{3, time.Nanosecond, time.Nanosecond, time.Nanosecond, time.Nanosecond},
	}
	for _, tt := range tests {
		if got := backoff(tt.retry, tt.min, tt.max, lowest); got != tt.lo {
			t.Errorf("backoff(%d, %s, %s) lowest = %s, want %s", tt.retry, tt.min, tt.max, got, tt.lo)
		}
		if got := backoff(tt.retry, tt.min, tt.max, highest); got != tt.hi {
			t.Errorf("backoff(%d, %s, %s) highest = %s, want %s", tt.retry, tt.min, tt.max, got, tt.hi)
		}
	}
}

// TestDefaultsKeepTheContract: first retry within 30 s; retries for at least
// 10 minutes.
func TestDefaultsKeepTheContract(t *testing.T) {
	o := withDefaults(Options{})
	if first := backoff(1, o.MinBackoff, o.MaxBackoff, func(k int64) int64 { return k - 1 }); first > 30*time.Second {
		t.Errorf("first retry may wait %s, the contract allows 30s", first)
	}
	if o.GiveUpAfter < 10*time.Minute {
		t.Errorf("GiveUpAfter = %s, the contract wants at least 10m", o.GiveUpAfter)
	}
}
