package events

import (
	"context"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Neither side falls back to a clock of its own: a missing Now is a wiring
// bug, and it says so.
func TestNowIsRequired(t *testing.T) {
	wantPanic := func(t *testing.T, f func()) {
		t.Helper()
		defer func() {
			if r := recover(); r == nil || !strings.Contains(r.(string), "Now is required") {
				t.Errorf("recovered %v, want a panic naming Now", r)
			}
		}()
		f()
	}
	wantPanic(t, func() {
		_ = (&Enqueuer{Queue: &fakeQueue{}}).Prepare(connection.Event{Type: connection.EventDisconnected, UserID: "42"})
	})
	wantPanic(t, func() { _, _ = (&Deliverer{}).Deliver(context.Background(), []byte("{}")) })
}
