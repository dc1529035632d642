package events

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/memstore"
)

func outboxStore(t *testing.T, clk *clocktest.Clock) *memstore.Store {
	t.Helper()
	st := memstore.New(memstore.Options{Now: clk.Now})
	if _, err := st.Create(t.Context(), connection.Connection{UserID: "42", Status: connection.StatusConnected}); err != nil {
		t.Fatal(err)
	}
	return st
}

// Send enqueues the stored entry's exact body under its delivery ID, then
// removes it from the outbox.
func TestSendEnqueuesThenRemovesTheEntry(t *testing.T) {
	clk := clocktest.New(t0)
	st, q := outboxStore(t, clk), &fakeQueue{}
	en := &Enqueuer{Queue: q, Outbox: st, Log: zerolog.Nop(), Now: clk.Now}
	ob := en.Prepare(connection.Event{Type: connection.EventDisconnected, UserID: "42", At: t0})
	if err := st.DeleteWithEvent(t.Context(), "42", ob); err != nil {
		t.Fatal(err)
	}
	en.Send(t.Context(), ob)
	m, _ := q.only(t)
	if m.DeliveryID != ob.DeliveryID || m.Body != ob.Body || !m.FirstEnqueuedAt.Equal(ob.CreatedAt) {
		t.Errorf("message %+v, want the entry %+v", m, ob)
	}
	if left, _ := st.ListOutbox(t.Context(), t0.Add(time.Hour), 10); len(left) != 0 {
		t.Errorf("outbox after Send: %+v", left)
	}
	en.Send(t.Context(), nil) // no webhook event: nothing
	if len(q.all()) != 1 {
		t.Error("Send(nil) enqueued something")
	}
}

// A failed enqueue is a warning (webhook_enqueue_deferred), not a drop:
// the entry stays, and Recover sends it once it is past the grace period.
func TestFailedSendIsLeftForRecover(t *testing.T) {
	clk := clocktest.New(t0)
	st := outboxStore(t, clk)
	logs := &logtest.Buffer{}
	q := &fakeQueue{fail: errors.New("queue down")}
	en := &Enqueuer{Queue: q, Outbox: st, Log: zerolog.New(logs), Now: clk.Now}
	ob := en.Prepare(connection.Event{Type: connection.EventDisconnected, UserID: "42", At: t0})
	if err := st.DeleteWithEvent(t.Context(), "42", ob); err != nil {
		t.Fatal(err)
	}
	en.Send(context.Background(), ob)
	if !logs.Has("webhook_enqueue_deferred", "delivery_id", ob.DeliveryID) || len(logs.Events("webhook_dropped")) != 0 {
		t.Errorf("logs: %s", logs.String())
	}
	q.mu.Lock()
	q.fail = nil
	q.mu.Unlock()
	clk.Advance(DefaultRecoverAfter - time.Second)
	if n, err := en.Recover(t.Context()); n != 0 || err != nil || len(q.all()) != 0 {
		t.Fatalf("Recover within the grace: %d, %v", n, err)
	}
	clk.Advance(2 * time.Second)
	if n, err := en.Recover(t.Context()); n != 1 || err != nil {
		t.Fatalf("Recover = %d, %v; want 1", n, err)
	}
	m, _ := q.only(t)
	if m.DeliveryID != ob.DeliveryID || m.Body != ob.Body || m.Attempt != 1 || !m.FirstEnqueuedAt.Equal(t0) {
		t.Errorf("recovered message %+v, want the entry %+v", m, ob)
	}
	if !logs.Has("webhook_recovered", "delivery_id", ob.DeliveryID) {
		t.Errorf("no webhook_recovered line: %s", logs.String())
	}
}
