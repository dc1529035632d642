package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
)

// outboxTests are the transactional outbox's rules (connection.OutboxStore).
var outboxTests = []struct {
	name string
	fn   func(*testing.T, connection.Store, connection.PendingStore)
}{
	{"OutboxCreate", testOutboxCreate},
	{"OutboxUpdateIsAtomic", testOutboxUpdateIsAtomic},
	{"OutboxDelete", testOutboxDelete},
	{"OutboxNilIsPlain", testOutboxNilIsPlain},
	{"ListIgnoresOutbox", testListIgnoresOutbox},
	{"ListOutboxByAge", testListOutboxByAge},
	{"OutboxRecoverSendsSameIDAndBody", testOutboxRecoverSendsSameIDAndBody},
}

var outboxSeq struct {
	sync.Mutex
	n int
}

// entry is an outbox entry for userID created at `at`, with a body like
// the webhook's.
func entry(userID string, at time.Time) *connection.OutboxEntry {
	outboxSeq.Lock()
	outboxSeq.n++
	n := outboxSeq.n
	outboxSeq.Unlock()
	body, _ := json.Marshal(map[string]any{"type": connection.EventConnected, "user_id": userID, "n": n, "name": "O'Brien \"&\" <x>"})
	return &connection.OutboxEntry{
		UserID: userID, DeliveryID: fmt.Sprintf("%08x-1111-4222-8333-444444444444", n),
		Type: connection.EventConnected, Body: string(body), CreatedAt: at,
	}
}

// outbox lists every entry, whatever its age.
func outbox(t *testing.T, s connection.Store) []connection.OutboxEntry {
	t.Helper()
	got, err := s.ListOutbox(t.Context(), base.Add(1000*time.Hour), 1000)
	if err != nil {
		t.Fatalf("ListOutbox: %v", err)
	}
	return got
}

func wantOutbox(t *testing.T, what string, s connection.Store, want ...*connection.OutboxEntry) {
	t.Helper()
	got := outbox(t, s)
	key := func(e connection.OutboxEntry) string { return e.DeliveryID }
	slices.SortFunc(got, func(a, b connection.OutboxEntry) int { return cmp(key(a), key(b)) })
	var w []connection.OutboxEntry
	for _, e := range want {
		w = append(w, *e)
	}
	slices.SortFunc(w, func(a, b connection.OutboxEntry) int { return cmp(key(a), key(b)) })
	if len(got) != len(w) {
		t.Fatalf("%s: outbox %+v, want %+v", what, got, w)
	}
	for i := range got {
		g := got[i]
		if g.UserID != w[i].UserID || g.DeliveryID != w[i].DeliveryID || g.Type != w[i].Type || g.Body != w[i].Body || !g.CreatedAt.Equal(w[i].CreatedAt) {
			t.Errorf("%s: outbox entry %+v, want %+v", what, g, w[i])
		}
	}
}

func cmp(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testOutboxCreate(t *testing.T, s connection.Store, _ connection.PendingStore) {
	ev := entry("ob1", base)
	got, err := s.CreateWithEvent(t.Context(), sample("ob1"), ev)
	if err != nil {
		t.Fatalf("CreateWithEvent: %v", err)
	}
	if got.ETag != "" {
		t.Errorf("CreateWithEvent returned ETag %q; a transaction's answer has none", got.ETag)
	}
	assertConnection(t, "created with its event", mustGet(t, s, "ob1"), sample("ob1"))
	wantOutbox(t, "after CreateWithEvent", s, ev)
	// A second create conflicts and stores no second entry.
	_, err = s.CreateWithEvent(t.Context(), sample("ob1"), entry("ob1", base))
	wantErr(t, "CreateWithEvent of an existing connection", err, connection.ErrConflict)
	wantOutbox(t, "after the conflicting create", s, ev)
	// An entry of another user is refused: it could not share the transaction.
	if _, err := s.CreateWithEvent(t.Context(), sample("ob2"), entry("ob3", base)); err == nil {
		t.Error("CreateWithEvent with another user's entry succeeded")
	}
	_, err = s.Peek(t.Context(), "ob2")
	wantErr(t, "Peek after the refused create", err, connection.ErrNotFound)
	wantOutbox(t, "after the refused create", s, ev)
}

// A failing If-Match writes neither the change nor the event.
func testOutboxUpdateIsAtomic(t *testing.T, s connection.Store, _ connection.PendingStore) {
	created := mustCreate(t, s, sample("ob1"))
	next := created
	next.Status = connection.StatusReconnectRequired
	newer, err := s.Update(t.Context(), created) // someone else wrote first
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateWithEvent(t.Context(), next, entry("ob1", base))
	wantErr(t, "UpdateWithEvent with a stale ETag", err, connection.ErrConflict)
	wantOutbox(t, "after the stale update", s)
	if got := mustGet(t, s, "ob1"); got.Status != connection.StatusConnected || got.ETag != newer.ETag {
		t.Errorf("the stale update changed the row: %v", got)
	}
	next.ETag = newer.ETag
	ev := entry("ob1", base)
	got, err := s.UpdateWithEvent(t.Context(), next, ev)
	if err != nil || got.ETag != "" {
		t.Fatalf("UpdateWithEvent = %q, %v; want no ETag, no error", got.ETag, err)
	}
	if got := mustGet(t, s, "ob1"); got.Status != connection.StatusReconnectRequired {
		t.Errorf("status %q after UpdateWithEvent", got.Status)
	}
	wantOutbox(t, "after UpdateWithEvent", s, ev)
	// The update's own ETag is now stale too.
	_, err = s.UpdateWithEvent(t.Context(), next, entry("ob1", base))
	wantErr(t, "UpdateWithEvent with the spent ETag", err, connection.ErrConflict)
	_, err = s.UpdateWithEvent(t.Context(), sample("gone"), entry("gone", base))
	if err == nil {
		t.Error("UpdateWithEvent of a missing connection succeeded")
	}
	wantOutbox(t, "after the failed updates", s, ev)
}

func testOutboxDelete(t *testing.T, s connection.Store, _ connection.PendingStore) {
	mustCreate(t, s, sample("ob1"))
	mustCreate(t, s, sample("ob2"))
	ev := entry("ob1", base)
	if err := s.DeleteWithEvent(t.Context(), "ob1", ev); err != nil {
		t.Fatalf("DeleteWithEvent: %v", err)
	}
	_, err := s.Peek(t.Context(), "ob1")
	wantErr(t, "Peek after DeleteWithEvent", err, connection.ErrNotFound)
	wantOutbox(t, "after DeleteWithEvent", s, ev)
	// No connection, no change: no event.
	err = s.DeleteWithEvent(t.Context(), "ob1", entry("ob1", base))
	wantErr(t, "DeleteWithEvent of a deleted connection", err, connection.ErrNotFound)
	wantOutbox(t, "after deleting nothing", s, ev)
	mustGet(t, s, "ob2")
}

// A nil entry is the plain method: an ETag comes back, no entry is stored.
func testOutboxNilIsPlain(t *testing.T, s connection.Store, _ connection.PendingStore) {
	c, err := s.CreateWithEvent(t.Context(), sample("ob1"), nil)
	if err != nil || c.ETag == "" {
		t.Fatalf("CreateWithEvent(nil) = %q, %v", c.ETag, err)
	}
	if c, err = s.UpdateWithEvent(t.Context(), c, nil); err != nil || c.ETag == "" {
		t.Fatalf("UpdateWithEvent(nil) = %q, %v", c.ETag, err)
	}
	if err := s.DeleteWithEvent(t.Context(), "ob1", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWithEvent(t.Context(), "ob1", nil); err != nil {
		t.Errorf("DeleteWithEvent(nil) of nothing = %v, want nil like Delete", err)
	}
	wantOutbox(t, "after writes without events", s)
}

// Outbox rows sit beside the connections: no listing, page or count of
// connections ever shows one, and a user whose partition holds only an
// outbox row is not connected.
func testListIgnoresOutbox(t *testing.T, s connection.Store, _ connection.PendingStore) {
	var ids []string
	for i := range 5 {
		id := fmt.Sprintf("ob%d", i)
		c := sample(id)
		if i%2 == 1 {
			c.Status = connection.StatusReconnectRequired
		}
		if _, err := s.CreateWithEvent(t.Context(), c, entry(id, base)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.DeleteWithEvent(t.Context(), "ob0", entry("ob0", base)); err != nil {
		t.Fatal(err)
	}
	if n := len(outbox(t, s)); n != 6 {
		t.Fatalf("%d outbox entries, want 6", n)
	}
	for _, limit := range []int{1, 2, 1000} {
		if got := listAll(t, s, "", limit); !slices.Equal(got, ids[1:]) {
			t.Errorf("List(limit %d) = %q, want %q", limit, got, ids[1:])
		}
		if got := listAll(t, s, connection.StatusReconnectRequired, limit); !slices.Equal(got, []string{"ob1", "ob3"}) {
			t.Errorf("List(reconnect_required, limit %d) = %q", limit, got)
		}
	}
	_, err := s.Get(t.Context(), "ob0")
	wantErr(t, "Get of a user with only an outbox row", err, connection.ErrNotFound)
	_, err = s.Peek(t.Context(), "ob0")
	wantErr(t, "Peek of a user with only an outbox row", err, connection.ErrNotFound)
}

func testListOutboxByAge(t *testing.T, s connection.Store, _ connection.PendingStore) {
	old, young := entry("ob1", base.Add(-time.Hour)), entry("ob2", base)
	if _, err := s.CreateWithEvent(t.Context(), sample("ob1"), old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateWithEvent(t.Context(), sample("ob2"), young); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListOutbox(t.Context(), base.Add(-time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].DeliveryID != old.DeliveryID || got[0].Body != old.Body {
		t.Errorf("ListOutbox(before base-1m) = %+v, %v; want only the old entry", got, err)
	}
	if got, err := s.ListOutbox(t.Context(), base.Add(time.Minute), 1); err != nil || len(got) != 1 {
		t.Errorf("ListOutbox(limit 1) = %d entries, %v", len(got), err)
	}
	for _, limit := range []int{0, 1001} {
		if _, err := s.ListOutbox(t.Context(), base, limit); err == nil {
			t.Errorf("ListOutbox(limit %d) succeeded", limit)
		}
	}
	if err := s.DeleteOutbox(t.Context(), *old); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(t.Context(), *old); err != nil {
		t.Errorf("DeleteOutbox of a deleted entry = %v, want nil", err)
	}
	wantOutbox(t, "after DeleteOutbox", s, young)
	mustGet(t, s, "ob1") // the connection beside it stays
}

// recordingQueue is a webhook queue that keeps what it is sent, or fails.
type recordingQueue struct {
	mu   sync.Mutex
	fail bool
	msgs []map[string]any
}

func (q *recordingQueue) Send(_ context.Context, text []byte, _ time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fail {
		return fmt.Errorf("queue down")
	}
	var m map[string]any
	if err := json.Unmarshal(text, &m); err != nil {
		return err
	}
	q.msgs = append(q.msgs, m)
	return nil
}

// The sweep's recovery (events.Enqueuer.Recover) on this store: an event
// stored with its change whose enqueue never happened (the process died)
// or failed is sent once it is older than the grace period, with its
// original delivery ID and body, and removed; a young one is left to the
// request still sending it.
func testOutboxRecoverSendsSameIDAndBody(t *testing.T, s connection.Store, _ connection.PendingStore) {
	now := base
	q := &recordingQueue{fail: true}
	en := &events.Enqueuer{Queue: q, Outbox: s, Log: zerolog.Nop(), Now: func() time.Time { return now }}
	crashed := en.Prepare(connection.Event{Type: connection.EventConnected, UserID: "ob1", At: base})
	if _, err := s.CreateWithEvent(t.Context(), sample("ob1"), crashed); err != nil {
		t.Fatal(err)
	}
	// ... and the process dies here: no Send.
	failed := en.Prepare(connection.Event{Type: connection.EventDisconnected, UserID: "ob2", At: base})
	mustCreate(t, s, sample("ob2"))
	if err := s.DeleteWithEvent(t.Context(), "ob2", failed); err != nil {
		t.Fatal(err)
	}
	en.Send(t.Context(), failed) // the queue is down: the entry stays
	wantOutbox(t, "after a crash and a failed enqueue", s, crashed, failed)

	q.fail = false
	now = base.Add(events.DefaultRecoverAfter / 2)
	if n, err := en.Recover(t.Context()); err != nil || n != 0 || len(q.msgs) != 0 {
		t.Fatalf("Recover within the grace = %d, %v, %d messages; want nothing sent", n, err, len(q.msgs))
	}
	now = base.Add(events.DefaultRecoverAfter + time.Second)
	if n, err := en.Recover(t.Context()); err != nil || n != 2 {
		t.Fatalf("Recover = %d, %v; want 2", n, err)
	}
	want := map[string]string{crashed.DeliveryID: crashed.Body, failed.DeliveryID: failed.Body}
	for _, m := range q.msgs {
		if body, ok := want[m["delivery_id"].(string)]; !ok || m["body"] != body || m["attempt"] != float64(1) || m["first_enqueued_at"] != base.Format(time.RFC3339Nano) {
			t.Errorf("recovered message %v; want one of %v with attempt 1 from %s", m, want, base)
		}
		delete(want, m["delivery_id"].(string))
	}
	if len(want) != 0 {
		t.Errorf("not recovered: %v", want)
	}
	wantOutbox(t, "after Recover", s)
	if n, err := en.Recover(t.Context()); err != nil || n != 0 {
		t.Errorf("second Recover = %d, %v; want nothing left", n, err)
	}
}
