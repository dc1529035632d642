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
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

const testSecret = "whsec-test-3f9a"

var t0 = time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)

// fakeQueue records what is sent; fail makes Send fail.
type fakeQueue struct {
	mu   sync.Mutex
	sent []sent
	fail error
}

type sent struct {
	text  []byte
	delay time.Duration
}

func (q *fakeQueue) Send(ctx context.Context, text []byte, delay time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail != nil {
		return q.fail
	}
	q.sent = append(q.sent, sent{append([]byte(nil), text...), delay})
	return nil
}

func (q *fakeQueue) all() []sent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]sent(nil), q.sent...)
}

func (q *fakeQueue) only(t *testing.T) (message, time.Duration) {
	t.Helper()
	all := q.all()
	if len(all) != 1 {
		t.Fatalf("queue got %d messages, want 1", len(all))
	}
	m, err := decodeMessage(all[0].text)
	if err != nil {
		t.Fatalf("%v: %s", err, all[0].text)
	}
	return m, all[0].delay
}

// receiver is a fake CMS endpoint.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []*http.Request
	bodies [][]byte
	status int
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, req)
		r.bodies = append(r.bodies, b)
		st := r.status
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.Close)
	return r
}

func publishOne(t *testing.T, e connection.Event) (*fakeQueue, []byte) {
	t.Helper()
	q := &fakeQueue{}
	en := &Enqueuer{Queue: q, Now: clocktest.New(t0).Now, Log: zerolog.Nop()}
	if _, err := en.PublishID(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return q, q.all()[0].text
}

func newDeliverer(url string, clk *clocktest.Clock, logs io.Writer) (*Deliverer, *fakeQueue, *fakeQueue) {
	q, p := &fakeQueue{}, &fakeQueue{}
	return &Deliverer{
		URL: url, Secret: func(context.Context) (string, error) { return testSecret, nil },
		HTTPClient: &http.Client{Timeout: 5 * time.Second}, Queue: q, Poison: p,
		Now: clk.Now, Log: zerolog.New(logs), RandN: func(k int64) int64 { return k - 1 },
	}, q, p
}

// The queue message holds the exact body, the delivery id, attempt 1 and
// the first-enqueue time; never a field named like the queue trigger's own
// binding data, never the secret.
func TestPublishEnqueuesTheFirstAttempt(t *testing.T) {
	ada := &connection.Account{ID: "oid-1", TenantID: "tid-1", Email: "ada@contoso.com", DisplayName: "Ada"}
	q, text := publishOne(t, connection.Event{Type: connection.EventConnected, UserID: "42", At: t0, Account: ada})
	m, delay := q.only(t)
	if delay != 0 || m.Attempt != 1 || !m.FirstEnqueuedAt.Equal(t0) || len(m.DeliveryID) != 36 {
		t.Errorf("message %+v delay %s", m, delay)
	}
	want, _ := encode(connection.Event{Type: connection.EventConnected, UserID: "42", At: t0, Account: ada})
	if m.Body != string(want) {
		t.Errorf("body %s, want %s", m.Body, want)
	}
	var fields map[string]any
	_ = json.Unmarshal(text, &fields)
	for k := range fields {
		for _, host := range []string{"id", "popreceipt", "dequeuecount", "insertiontime", "expirationtime", "nextvisibletime", "queuetrigger", "sys"} {
			if strings.EqualFold(k, host) {
				t.Errorf("message field %q collides with the queue trigger's binding data", k)
			}
		}
	}
	if bytes.Contains(text, []byte(testSecret)) {
		t.Error("the message carries the secret")
	}
}

// An event that cannot be encoded is logged as webhook_dropped (reason
// invalid_event) and gives no outbox entry: nothing to store or send.
func TestPrepareInvalidEventIsDropped(t *testing.T) {
	logs := &logtest.Buffer{}
	en := &Enqueuer{Queue: &fakeQueue{}, Log: zerolog.New(logs), Now: clocktest.New(t0).Now}
	if ob := en.Prepare(connection.Event{Type: "connection.renamed", UserID: "42"}); ob != nil || !logs.Has("webhook_dropped", "reason", "invalid_event") {
		t.Errorf("an unknown type was prepared: %+v; logs %s", ob, logs.String())
	}
}

// The enqueue survives the caller hanging up: the change is stored.
func TestPublishIgnoresCancellationOfTheRequest(t *testing.T) {
	q := &blockingQueue{}
	en := &Enqueuer{Queue: q, Log: zerolog.Nop(), Now: clocktest.New(t0).Now}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := en.PublishID(ctx, connection.Event{Type: connection.EventDisconnected, UserID: "42"}); err != nil {
		t.Fatalf("Publish with a cancelled request context: %v", err)
	}
}

type blockingQueue struct{}

func (blockingQueue) Send(ctx context.Context, _ []byte, _ time.Duration) error { return ctx.Err() }

func TestDeliverSignsAndSendsTheSameBytes(t *testing.T) {
	r := newReceiver(t, http.StatusNoContent)
	_, text := publishOne(t, connection.Event{Type: connection.EventReconnectRequired, UserID: "42", At: t0, Reason: "invalid_grant"})
	m, _ := decodeMessage(text)
	logs := &logtest.Buffer{}
	d, q, p := newDeliverer(r.URL+"/hooks/microsoft", clocktest.New(t0.Add(time.Second)), logs)
	out, err := d.Deliver(context.Background(), text)
	if err != nil || out != Delivered {
		t.Fatalf("Deliver = %v, %v", out, err)
	}
	req, body := r.got[0], r.bodies[0]
	if string(body) != m.Body || req.URL.Path != "/hooks/microsoft" || req.Method != http.MethodPost {
		t.Errorf("%s %s %s", req.Method, req.URL.Path, body)
	}
	if req.Header.Get(DeliveryHeader) != m.DeliveryID || !Verify(testSecret, body, req.Header.Get(SignatureHeader)) {
		t.Errorf("headers %v", req.Header)
	}
	if req.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", req.Header.Get("Content-Type"))
	}
	if len(q.all())+len(p.all()) != 0 {
		t.Error("a delivered event was enqueued again")
	}
	if !logs.Has("webhook_delivered", "delivery_id", m.DeliveryID) {
		t.Errorf("logs: %s", logs.String())
	}
}

// TestBackoffScheduleWithTheClock walks one event through a CMS that is
// down for good, on the settable clock: each failure enqueues the next
// attempt with the same id and body and a doubling delay (the first within
// 30 s, capped at an hour); the first failure at or after 24 h since the
// first enqueue logs webhook_dropped and moves the message to the poison
// queue unchanged.
func TestBackoffScheduleWithTheClock(t *testing.T) {
	r := newReceiver(t, http.StatusServiceUnavailable)
	_, text := publishOne(t, connection.Event{Type: connection.EventDisconnected, UserID: "42", At: t0})
	first, _ := decodeMessage(text)
	clk := clocktest.New(t0)
	logs := &logtest.Buffer{}
	d, q, poison := newDeliverer(r.URL, clk, logs)

	var delays []time.Duration
	for attempt := 1; ; attempt++ {
		out, err := d.Deliver(context.Background(), text)
		if err != nil {
			t.Fatal(err)
		}
		if out == Dropped {
			break
		}
		all := q.all()
		next, err := decodeMessage(all[len(all)-1].text)
		if err != nil {
			t.Fatal(err)
		}
		delay := all[len(all)-1].delay
		if next.DeliveryID != first.DeliveryID || next.Body != first.Body || !next.FirstEnqueuedAt.Equal(first.FirstEnqueuedAt) || next.Attempt != attempt+1 {
			t.Fatalf("attempt %d: next message %+v differs from %+v", attempt, next, first)
		}
		delays = append(delays, delay)
		text = all[len(all)-1].text
		clk.Advance(delay)
		if attempt > 100 {
			t.Fatal("never dropped")
		}
	}
	if delays[0] > 30*time.Second || delays[0] < 5*time.Second {
		t.Errorf("first retry after %s, want within 30 s", delays[0])
	}
	for i := 1; i < len(delays); i++ {
		if delays[i] < delays[i-1] || delays[i] > time.Hour {
			t.Errorf("delay %d = %s after %s: want doubling up to 1h", i, delays[i], delays[i-1])
		}
	}
	elapsed := clk.Now().Sub(t0)
	if elapsed < 24*time.Hour || elapsed > 25*time.Hour {
		t.Errorf("dropped after %s, want 24-25 h", elapsed)
	}
	t.Logf("%d attempts over %s; delays %v", len(delays)+1, elapsed, delays[:8])
	if n := len(r.got); n != len(delays)+1 {
		t.Errorf("CMS got %d attempts, want %d", n, len(delays)+1)
	}
	for i, b := range r.bodies {
		if string(b) != first.Body || r.got[i].Header.Get(DeliveryHeader) != first.DeliveryID {
			t.Fatalf("attempt %d sent another body or id", i+1)
		}
	}
	p := poison.all()
	if len(p) != 1 || !bytes.Equal(p[0].text, text) || p[0].delay != 0 {
		t.Fatalf("poison queue holds %d messages; want the last one as it was", len(p))
	}
	if !logs.Has("webhook_dropped", "reason", "gave_up") || !logs.Has("webhook_dropped", "delivery_id", first.DeliveryID) {
		t.Errorf("no webhook_dropped line: %s", logs.String())
	}
}

// A hanging CMS fails the attempt at the timeout; a redirect is a failure,
// never followed; network errors are logged without the URL (it may carry
// a credential); a missing or empty secret never sends unsigned.
func TestDeliverFailures(t *testing.T) {
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // so the server notices the client leave
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(hang) }) // runs before hanging.Close
	elsewhere := newReceiver(t, http.StatusOK)
	redirecting := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redirecting.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL + "/hook?token=url-credential-7c1d"
	gone.Close()
	ok := newReceiver(t, http.StatusOK)

	tests := []struct {
		name   string
		url    string
		secret func(context.Context) (string, error)
		want   string
		status float64
	}{
		{"timeout", hanging.URL, nil, "deadline exceeded", 0},
		{"redirect", redirecting.URL, nil, "answered 307", 307},
		{"refused", goneURL, nil, "events: post: ", 0},
		{"secret unreadable", ok.URL, func(context.Context) (string, error) { return "", errors.New("vault down") }, "vault down", 0},
		{"secret empty", ok.URL, func(context.Context) (string, error) { return "", nil }, "secret is empty", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, text := publishOne(t, connection.Event{Type: connection.EventConnected, UserID: "42", At: t0})
			logs := &logtest.Buffer{}
			d, q, _ := newDeliverer(tt.url, clocktest.New(t0), logs)
			d.AttemptTimeout = 200 * time.Millisecond
			if tt.secret != nil {
				d.Secret = tt.secret
			}
			out, err := d.Deliver(context.Background(), text)
			if err != nil || out != Retrying {
				t.Fatalf("Deliver = %v, %v; want Retrying", out, err)
			}
			if m, _ := q.only(t); m.Attempt != 2 {
				t.Errorf("next attempt %d", m.Attempt)
			}
			lines := logs.Events("webhook_retry")
			if len(lines) != 1 || !strings.Contains(lines[0]["error"].(string), tt.want) {
				t.Fatalf("webhook_retry %v, want error containing %q", lines, tt.want)
			}
			if tt.status != 0 && lines[0]["status"] != tt.status {
				t.Errorf("status %v", lines[0]["status"])
			}
			if strings.Contains(logs.String(), "url-credential-7c1d") || strings.Contains(logs.String(), testSecret) {
				t.Errorf("a credential reached the log: %s", logs.String())
			}
		})
	}
	if len(elsewhere.got) != 0 {
		t.Error("the redirect was followed")
	}
	if len(ok.got) != 0 {
		t.Error("an event was sent without a usable secret")
	}
}

// When the next step cannot be stored, Deliver returns an error (the host
// then shows the same message again): nothing is lost.
func TestDeliverFailsWhenTheNextStepCannotBeStored(t *testing.T) {
	r := newReceiver(t, http.StatusInternalServerError)
	_, text := publishOne(t, connection.Event{Type: connection.EventConnected, UserID: "42", At: t0})
	d, q, p := newDeliverer(r.URL, clocktest.New(t0), io.Discard)
	q.fail = errors.New("queue down")
	if _, err := d.Deliver(context.Background(), text); err == nil {
		t.Error("retry not stored, but Deliver succeeded")
	}
	d, _, p = newDeliverer(r.URL, clocktest.New(t0.Add(25*time.Hour)), io.Discard)
	p.fail = errors.New("queue down")
	if _, err := d.Deliver(context.Background(), text); err == nil {
		t.Error("poison not stored, but Deliver succeeded")
	}
}

// A message that is not a delivery goes to the poison queue as it is.
func TestDeliverPoisonsAnInvalidMessage(t *testing.T) {
	logs := &logtest.Buffer{}
	d, q, p := newDeliverer("http://127.0.0.1:1", clocktest.New(t0), logs)
	for _, text := range []string{`nope`, `{"delivery_id":"x"}`, `{"id":"x","body":"{}","attempt":1}`} {
		if out, err := d.Deliver(context.Background(), []byte(text)); err != nil || out != Dropped {
			t.Errorf("%s: %v, %v", text, out, err)
		}
	}
	if len(p.all()) != 3 || len(q.all()) != 0 || len(logs.Events("webhook_dropped")) != 3 {
		t.Errorf("poison %d, queue %d; logs %s", len(p.all()), len(q.all()), logs.String())
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
		{1, 10 * time.Second, time.Hour, 5 * time.Second, 10 * time.Second},
		{2, 10 * time.Second, time.Hour, 10 * time.Second, 20 * time.Second},
		{9, 10 * time.Second, time.Hour, 1280 * time.Second, 2560 * time.Second},
		{10, 10 * time.Second, time.Hour, 30 * time.Minute, time.Hour},
		{1000, 10 * time.Second, time.Hour, 30 * time.Minute, time.Hour},
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

// TestDefaultsKeepTheContract: the first retry within 30 s (with host.json's
// maxPollingInterval of 2 s on top); retries for at least 24 hours.
func TestDefaultsKeepTheContract(t *testing.T) {
	if first := backoff(1, DefaultMinBackoff, DefaultMaxBackoff, func(k int64) int64 { return k - 1 }); first+2*time.Second > 30*time.Second {
		t.Errorf("first retry may wait %s, the contract allows 30s", first)
	}
	if DefaultGiveUpAfter < 24*time.Hour {
		t.Errorf("GiveUpAfter = %s, the contract wants at least 24h", DefaultGiveUpAfter)
	}
}
