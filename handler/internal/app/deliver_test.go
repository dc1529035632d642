package app

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/funchost"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

// sender keeps what is sent, or refuses it.
type sender struct {
	mu   sync.Mutex
	sent [][]byte
	err  error
}

func (s *sender) Send(_ context.Context, text []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.sent = append(s.sent, append([]byte(nil), text...))
	return nil
}

// TestHostPoisonIsLoggedAsDropped: when a failed attempt's next step cannot
// be stored, the invocation fails and the host shows the message again; on
// the last receive host.json allows, the host moves it to the poison queue
// by itself. The webhook function says so with webhook_dropped (the lost-
// event alert counts it), and only then.
func TestHostPoisonIsLoggedAsDropped(t *testing.T) {
	cms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	t.Cleanup(cms.Close)
	now := func() time.Time { return time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC) }

	first := &sender{}
	enq := &events.Enqueuer{Queue: first, Outbox: memstore.New(memstore.Options{Now: now}), Log: zerolog.Nop(), Now: now}
	enq.Send(context.Background(), enq.Prepare(connection.Event{Type: connection.EventDisconnected, UserID: "u1", At: now()}))
	if len(first.sent) != 1 {
		t.Fatalf("%d messages enqueued, want 1", len(first.sent))
	}
	d := &events.Deliverer{
		URL: cms.URL, HTTPClient: cms.Client(), Now: now, Log: zerolog.Nop(),
		Queue: &sender{err: errors.New("queue unavailable")}, Poison: &sender{},
		Secret: func(context.Context) (string, error) { return "webhook-secret", nil },
	}
	fn := deliver(d, 10)
	for _, tc := range []struct {
		dequeue int64
		dropped bool
	}{{1, false}, {9, false}, {10, true}} {
		var logs bytes.Buffer
		ctx := zerolog.New(&logs).WithContext(context.Background())
		_, err := fn(ctx, funchost.Invocation{}, funchost.QueueMessage{Body: first.sent[0], DequeueCount: tc.dequeue})
		if err == nil {
			t.Fatalf("receive %d: the next attempt could not be stored, yet the invocation succeeded", tc.dequeue)
		}
		got := strings.Contains(logs.String(), `"event":"webhook_dropped"`) && strings.Contains(logs.String(), `"reason":"host_poison"`)
		if got != tc.dropped {
			t.Errorf("receive %d of 10: webhook_dropped host_poison logged = %v, want %v\n%s", tc.dequeue, got, tc.dropped, logs.String())
		}
	}
}
