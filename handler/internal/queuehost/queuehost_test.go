package queuehost

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/funchost"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

const goldenMessage = `{"delivery_id":"6f1c2b9e-8d4a-4e7b-9c3d-2a1b0e9f8d7c","body":"{\"type\":\"connection.disconnected\",\"user_id\":\"ada-42\",\"at\":\"2026-11-25T23:34:58Z\",\"account\":{\"id\":\"00000000-0000-0000-66f3-3332eca7ea81\",\"tenant_id\":\"9188040d-6c67-4c5b-b112-36a304b66dad\",\"email\":\"ada@contoso.com\",\"display_name\":\"Ada Lovelace\"},\"reason\":null}","attempt":1,"first_enqueued_at":"2026-11-25T23:34:58.1234567Z"}`

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// The poller sends exactly the host's payload: the golden file funchost's
// tests decode.
func TestPayloadIsTheGolden(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "funchost", "testdata", "queue_request.json"))
	if err != nil {
		t.Fatal(err)
	}
	m := storagequeue.Message{
		ID: "9a3d0b62-4f5e-4c1a-8b7d-1e2f3a4b5c6d", PopReceipt: "AgAAAAMAAAAAAAAAnXj8Zk1f3AE=", DequeueCount: 1,
		InsertionTime:   mustTime("2026-11-25T23:34:58.4Z"),
		ExpirationTime:  mustTime("9999-12-31T23:59:59Z"),
		NextVisibleTime: mustTime("2026-11-25T23:45:00Z"),
	}
	got, err := Payload("webhook", "message", m, []byte(goldenMessage), mustTime("2026-11-25T23:35:00.0123457Z"), "3c2b1a09-8f7e-4d6c-9b5a-4e3d2c1b0a9f")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(want)) {
		t.Errorf("payload differs from the golden file:\n got %s\nwant %s", got, want)
	}
}

func TestParseTimeSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"00:00:02": 2 * time.Second, "00:00:30": 30 * time.Second, "01:02:03": time.Hour + 2*time.Minute + 3*time.Second,
		"1.00:00:00": 24 * time.Hour, "00:00:00.1": 100 * time.Millisecond, "00:00:00.0000001": 100 * time.Nanosecond,
	} {
		if got, err := ParseTimeSpan(in); err != nil || got != want {
			t.Errorf("ParseTimeSpan(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "2s", "00:00", "00:60:x"} {
		if _, err := ParseTimeSpan(bad); err == nil {
			t.Errorf("ParseTimeSpan(%q) succeeded", bad)
		}
	}
}

// The repository's host.json is what the local trigger runs with.
func TestReadsTheRepositoryHostJSON(t *testing.T) {
	s, err := ReadHostJSON(filepath.Join("..", "..", "..", "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxPollingInterval != 2*time.Second || s.VisibilityTimeout != 30*time.Second || s.MaxDequeueCount != 10 || s.MessageEncoding != "base64" {
		t.Errorf("host.json queues = %+v; docs/architecture.md explains the chosen values", s)
	}
}

// recorder is a handler that answers each invocation with status(n).
type recorder struct {
	mu       sync.Mutex
	payloads []funchost.QueueMessage
	status   func(m funchost.QueueMessage) int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/webhook" || req.Header.Get(funchost.InvocationIDHeader) == "" {
		http.NotFound(w, req)
		return
	}
	m, _, err := funchost.DecodeQueue(req.Body, "message")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.payloads = append(r.payloads, m)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status(m))
	_, _ = w.Write([]byte(`{"Outputs":{},"Logs":[],"ReturnValue":null}`))
}

func (r *recorder) count(body string) (n int, lastDequeue int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.payloads {
		if string(p.Body) == body {
			n++
			lastDequeue = p.DequeueCount
		}
	}
	return n, lastDequeue
}

var seq atomic.Int32

// Against real Azurite: a 2xx deletes the message; a failure releases it
// (visible again after visibilityTimeout) until maxDequeueCount receives,
// then it is in the poison queue as it was stored.
func TestDeletesOnSuccessRetriesAndPoisons(t *testing.T) {
	svc, err := storagequeue.New(storagequeue.Options{ConnectionString: azurite.QueueForTest(t)})
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("qh-%d", seq.Add(1))
	q, poison := svc.Queue(name), svc.Queue(name+storagequeue.PoisonSuffix)
	rec := &recorder{status: func(m funchost.QueueMessage) int {
		if string(m.Body) == `{"x":"fail"}` {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	for _, b := range []string{`{"x":"ok"}`, `{"x":"fail"}`} {
		if err := q.Send(ctx, []byte(b), 0); err != nil {
			t.Fatal(err)
		}
	}
	h := Start(Options{
		Queue: q, Poison: poison, HandlerURL: srv.URL, Function: "webhook", Binding: "message",
		Settings: Settings{MaxPollingInterval: 200 * time.Millisecond, VisibilityTimeout: 0, MaxDequeueCount: 3, BatchSize: 16, MessageEncoding: "base64"},
		Log:      zerolog.Nop(),
	})
	t.Cleanup(h.Stop)

	deadline := time.Now().Add(20 * time.Second)
	for {
		p, _ := poison.Peek(ctx, 32)
		if len(p) == 1 {
			if b, _ := p[0].Body(); string(b) != `{"x":"fail"}` {
				t.Errorf("poisoned %q", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failing message never reached the poison queue")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := rec.count(`{"x":"ok"}`); n != 1 {
		t.Errorf("the answered message was invoked %d times, want 1 (deleted on 2xx)", n)
	}
	if n, last := rec.count(`{"x":"fail"}`); n != 3 || last != 3 {
		t.Errorf("the failing message was invoked %d times (last dequeue count %d), want 3 (maxDequeueCount)", n, last)
	}
	if left, _ := q.Peek(ctx, 32); len(left) != 0 {
		t.Errorf("%d messages left on the queue", len(left))
	}
}
