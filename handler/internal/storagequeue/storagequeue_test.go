package storagequeue

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/azurite"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

var queueSeq atomic.Int32

func newQueue(t *testing.T) (*Service, *Queue) {
	t.Helper()
	s, err := New(Options{ConnectionString: azurite.QueueForTest(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s, s.Queue(fmt.Sprintf("sq-%d-%d", os.Getpid()%100000, queueSeq.Add(1)))
}

func TestExpandConnectionString(t *testing.T) {
	for _, in := range []string{"UseDevelopmentStorage=true", "UseDevelopmentStorage=true;", " usedevelopmentstorage = TRUE "} {
		got := ExpandConnectionString(in)
		if !strings.Contains(got, "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1") {
			t.Errorf("%q -> %q", in, got)
		}
	}
	cs := "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k"
	if got := ExpandConnectionString(cs); got != cs {
		t.Errorf("a real connection string changed: %q", got)
	}
	if _, err := New(Options{ConnectionString: "UseDevelopmentStorage=true"}); err != nil {
		t.Errorf("New with the development shorthand: %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without any endpoint succeeded")
	}
	if _, err := New(Options{ServiceURL: "https://a.queue.core.windows.net"}); err == nil {
		t.Error("a service URL without a credential was accepted")
	}
}

// The message round-trips through Queue Storage base64-encoded (what the
// host's messageEncoding "base64" decodes), a missing queue is created, a
// delay hides it, and receive / release / delete behave as the host needs.
func TestSendReceiveReleaseDelete(t *testing.T) {
	ctx := context.Background()
	_, q := newQueue(t)
	body := []byte(`{"delivery_id":"d1","body":"{\"a\":\"<&>\"}"}`)
	if err := q.Send(ctx, body, 0); err != nil {
		t.Fatalf("send to a queue that does not exist yet: %v", err)
	}
	if err := q.Send(ctx, []byte("later"), time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := q.Receive(ctx, 32, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("received %d messages, want 1 (the delayed one is invisible)", len(got))
	}
	m := got[0]
	if m.Text != base64.StdEncoding.EncodeToString(body) {
		t.Errorf("stored text %q is not the base64 of the body", m.Text)
	}
	if b, err := m.Body(); err != nil || string(b) != string(body) {
		t.Errorf("Body = %q, %v", b, err)
	}
	if m.ID == "" || m.PopReceipt == "" || m.DequeueCount != 1 || m.InsertionTime.IsZero() {
		t.Errorf("message metadata %+v", m)
	}
	if m.ExpirationTime.Year() < 9999 {
		t.Errorf("expires %s: want never (TTL -1)", m.ExpirationTime)
	}
	if err := q.Release(ctx, m, 0); err != nil {
		t.Fatal(err)
	}
	again, err := q.Receive(ctx, 32, time.Minute)
	if err != nil || len(again) != 1 || again[0].ID != m.ID || again[0].DequeueCount != 2 {
		t.Fatalf("after release: %+v, %v; want the same message, dequeue count 2", again, err)
	}
	if err := q.Delete(ctx, again[0]); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(ctx, m, 0); err == nil {
		t.Error("a stale pop receipt released a deleted message")
	}
	if left, _ := q.Peek(ctx, 32); len(left) != 0 {
		t.Errorf("after delete: %d messages visible", len(left))
	}
}

func TestSendTextKeepsTheStoredForm(t *testing.T) {
	ctx := context.Background()
	s, q := newQueue(t)
	if err := q.Send(ctx, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	got, _ := q.Receive(ctx, 1, time.Minute)
	poison := s.Queue(q.Name() + PoisonSuffix)
	if err := poison.SendText(ctx, got[0].Text); err != nil {
		t.Fatal(err)
	}
	p, err := poison.Peek(ctx, 32)
	if err != nil || len(p) != 1 || p[0].Text != got[0].Text {
		t.Fatalf("poison queue: %+v, %v", p, err)
	}
	if b, _ := p[0].Body(); string(b) != "x" {
		t.Errorf("poisoned body %q", b)
	}
}

func TestReceiveFromAMissingQueueIsEmpty(t *testing.T) {
	_, q := newQueue(t)
	if got, err := q.Receive(context.Background(), 1, time.Minute); err != nil || len(got) != 0 {
		t.Errorf("Receive = %v, %v", got, err)
	}
}
