package events_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

// On a real queue (Azurite) and the settable clock: the first failure
// schedules attempt 2 invisibly (it is not received before its delay), and
// a failure 24 hours after the first enqueue logs webhook_dropped and
// leaves the delivery, unchanged, in "<queue>-poison", where an operator
// can replay it.
func TestDropAfter24HoursLandsInThePoisonQueue(t *testing.T) {
	ctx := context.Background()
	svc, err := storagequeue.New(storagequeue.Options{ConnectionString: azurite.QueueForTest(t)})
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ev-%d", time.Now().UnixNano()%1_000_000)
	q, poison := svc.Queue(name), svc.Queue(name+storagequeue.PoisonSuffix)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) }))
	t.Cleanup(down.Close)
	t0 := time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)
	clk := clocktest.New(t0)
	logs := &logtest.Buffer{}

	en := &events.Enqueuer{Queue: q, Now: clk.Now, Log: zerolog.Nop()}
	id, err := en.PublishID(ctx, connection.Event{Type: connection.EventDisconnected, UserID: "42"})
	if err != nil {
		t.Fatal(err)
	}
	d := &events.Deliverer{
		URL: down.URL, Secret: func(context.Context) (string, error) { return "s", nil },
		Queue: q, Poison: poison, Now: clk.Now, Log: zerolog.New(logs),
	}
	receive := func() storagequeue.Message {
		t.Helper()
		ms, err := q.Receive(ctx, 32, time.Minute)
		if err != nil || len(ms) != 1 {
			t.Fatalf("received %d messages, %v; want 1", len(ms), err)
		}
		if err := q.Delete(ctx, ms[0]); err != nil { // the host, after a 2xx
			t.Fatal(err)
		}
		return ms[0]
	}
	first := receive()
	body, _ := first.Body()
	if out, err := d.Deliver(ctx, body); err != nil || out != events.Retrying {
		t.Fatalf("first attempt: %v, %v", out, err)
	}
	if ms, _ := q.Receive(ctx, 32, time.Minute); len(ms) != 0 {
		t.Fatal("the retry is visible before its backoff")
	}
	// The same delivery, a day later: the next failure gives up.
	clk.Advance(24 * time.Hour)
	if out, err := d.Deliver(ctx, body); err != nil || out != events.Dropped {
		t.Fatalf("after 24 h: %v, %v", out, err)
	}
	p, err := poison.Peek(ctx, 32)
	if err != nil || len(p) != 1 {
		t.Fatalf("poison queue holds %d messages, %v", len(p), err)
	}
	if got, _ := p[0].Body(); string(got) != string(body) {
		t.Errorf("poisoned %s, want the delivery as queued %s", got, body)
	}
	if p[0].ExpirationTime.Year() < 9999 {
		t.Errorf("the poisoned delivery expires %s", p[0].ExpirationTime)
	}
	if !logs.Has("webhook_dropped", "delivery_id", id) || !logs.Has("webhook_dropped", "reason", "gave_up") {
		t.Errorf("logs: %s", logs.String())
	}
}
