package faulttest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/queuehost"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

// A status change whose enqueue fails (Queue Storage refuses it, as it
// would be missing after a crash between the store and the enqueue) is not
// lost: the request answers as usual, the event waits in the outbox beside
// the change (webhook_enqueue_deferred, no webhook_dropped), the sweep
// leaves it alone within the grace period (the request that raised it may
// still be sending it) and then sends it with the delivery ID and body it
// got when the change was stored; the CMS receives it once, and the outbox
// is empty again.
func TestOutboxDeliversWhatTheEnqueueMissed(t *testing.T) {
	queues := azurite.QueueForTest(t)
	hookSecret := randomString(32)
	recv := newHookReceiver(t, hookSecret)
	recv.up.Store(true)
	queueName := fmt.Sprintf("outbox-%d", time.Now().UnixNano()%1_000_000)
	s := start(t, options{settings: map[string]string{
		"CMS_WEBHOOK_URL":     recv.URL + "/hooks/microsoft",
		"CMS_WEBHOOK_SECRET":  hookSecret,
		"AzureWebJobsStorage": queues,
		"WEBHOOK_QUEUE":       queueName,
	}})
	if err := s.inj.Route(queueEndpoint(t, queues), Queues); err != nil {
		t.Fatal(err)
	}
	settings, err := queuehost.ReadHostJSON(filepath.Join("..", "..", "..", "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := storagequeue.New(storagequeue.Options{ConnectionString: queues})
	if err != nil {
		t.Fatal(err)
	}
	trigger := queuehost.Start(queuehost.Options{
		Queue: qs.Queue(queueName), Poison: qs.Queue(queueName + storagequeue.PoisonSuffix),
		HandlerURL: s.url, Function: "webhook", Binding: "message", Settings: settings,
		Log: zerolog.New(s.logs).With().Str("component", "queue-trigger").Logger(),
	})
	t.Cleanup(trigger.Stop)

	// Connected, not due for a refresh: the sweep below changes nothing
	// but the outbox.
	now := s.clock.Now()
	for _, u := range []string{"ob-1", "ob-2"} {
		if _, err := s.store.Create(t.Context(), connection.Connection{
			UserID: u, Status: connection.StatusConnected, Account: connection.Account{ID: "oid-" + u, TenantID: "tid", Email: u + "@contoso.com"},
			Scopes: scopes, AccessToken: "at-" + u, RefreshToken: "rt-" + u,
			AccessTokenExpiresAt: now.Add(time.Hour), ConnectedAt: now, LastRefreshedAt: now, LastUsedAt: now,
		}); err != nil {
			t.Fatal(err)
		}
	}

	refused := s.inj.Add(&Rule{Dependency: Queues, Match: Methods(http.MethodPost),
		Fault: Status(http.StatusForbidden, http.Header{"X-Ms-Error-Code": {"AuthorizationFailure"}}, []byte("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationFailure</Code><Message>refused</Message></Error>"))})
	if r := s.do(t, http.MethodDelete, "/api/connections/ob-1", nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE ob-1 while the queue refuses: %d %s", r.status, r.body)
	}
	if refused.Injected() == 0 {
		t.Fatal("the enqueue did not reach the queue rule")
	}
	s.inj.Clear()
	deferred := s.logs.Events("webhook_enqueue_deferred")
	if len(deferred) != 1 || deferred[0]["user_id"] != "ob-1" {
		t.Fatalf("webhook_enqueue_deferred lines: %v", deferred)
	}
	if n := len(s.logs.Events("webhook_dropped")); n != 0 {
		t.Errorf("%d webhook_dropped lines: the event is late, not lost", n)
	}
	id, _ := deferred[0]["delivery_id"].(string)
	stored, err := s.store.ListOutbox(t.Context(), s.clock.Now().Add(time.Hour), 10)
	if err != nil || len(stored) != 1 || stored[0].DeliveryID != id {
		t.Fatalf("outbox after the failed enqueue = %+v, %v; want the entry %s", stored, err, id)
	}
	// The outbox row is no connection: the CMS's listing and status read
	// do not see it.
	if r := s.do(t, http.MethodGet, "/api/connections?limit=1000", nil, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"ob-2"`) || strings.Contains(string(r.body), `"ob-1"`) || strings.Contains(string(r.body), "outbox") {
		t.Errorf("GET /api/connections with an outbox row: %d %s", r.status, r.body)
	}
	if r := s.do(t, http.MethodGet, "/api/connections/ob-1", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("GET /api/connections/ob-1 with only its outbox row: %d %s", r.status, r.body)
	}
	// The normal path still works beside it, and leaves no entry.
	if r := s.do(t, http.MethodDelete, "/api/connections/ob-2", nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE ob-2: %d", r.status)
	}
	waitFor(t, 30*time.Second, func() bool { recv.mu.Lock(); defer recv.mu.Unlock(); return recv.okUsers["ob-2"] })
	if got := s.logs.Events("webhook_enqueued"); len(got) != 1 {
		t.Errorf("webhook_enqueued lines %v, want only ob-2's", got)
	}

	// Within the grace period the sweep leaves the entry alone.
	s.sweep(t)
	if n := len(s.logs.Events("webhook_recovered")); n != 0 {
		t.Fatalf("the sweep recovered %d entries within the grace period", n)
	}
	s.clock.Advance(events.DefaultRecoverAfter + time.Minute)
	s.sweep(t)
	if got := s.logs.Events("webhook_recovered"); len(got) != 1 || got[0]["delivery_id"] != id {
		t.Fatalf("webhook_recovered lines %v, want %s", got, id)
	}
	waitFor(t, 30*time.Second, func() bool { recv.mu.Lock(); defer recv.mu.Unlock(); return recv.okUsers["ob-1"] })

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if ids := recv.users["ob-1"]; len(ids) != 1 || !ids[id] {
		t.Errorf("ob-1's deliveries %v, want only %s", ids, id)
	}
	if recv.badSigns > 0 {
		t.Errorf("%d attempts with a bad signature", recv.badSigns)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(recv.bodies[id][0]), &ev); err != nil || ev["type"] != connection.EventDisconnected || ev["user_id"] != "ob-1" || recv.bodies[id][0] != stored[0].Body {
		t.Errorf("delivered body %s, want the stored %s", recv.bodies[id][0], stored[0].Body)
	}
	left, err := s.store.ListOutbox(t.Context(), s.clock.Now().Add(time.Hour), 10)
	if err != nil || len(left) != 0 {
		t.Errorf("outbox after the recovery = %+v, %v; want empty", left, err)
	}
}

// queueEndpoint is the QueueEndpoint of an Azurite connection string.
func queueEndpoint(t *testing.T, conn string) string {
	t.Helper()
	for _, kv := range strings.Split(conn, ";") {
		if v, ok := strings.CutPrefix(kv, "QueueEndpoint="); ok {
			return v
		}
	}
	t.Fatalf("no QueueEndpoint in %q", conn)
	return ""
}

// Without CMS_WEBHOOK_URL nothing is raised, so no outbox row is written:
// a disconnect and a reconnect_required leave only connection rows.
func TestNoWebhookWritesNoOutbox(t *testing.T) {
	s := start(t, options{})
	now := s.clock.Now()
	for _, u := range []string{"nohook-1", "nohook-2"} {
		if _, err := s.store.Create(t.Context(), connection.Connection{
			UserID: u, Status: connection.StatusConnected, Account: connection.Account{ID: "oid-" + u, TenantID: "tid"},
			Scopes: scopes, AccessToken: "at-" + u, RefreshToken: "rt-revoked-" + u,
			AccessTokenExpiresAt: now.Add(-time.Hour), ConnectedAt: now, LastRefreshedAt: now, LastUsedAt: now,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if r := s.do(t, http.MethodDelete, "/api/connections/nohook-1", nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	// devidp does not know this refresh token: invalid_grant, so the token
	// API stores reconnect_required.
	if r := s.token(t, "nohook-2"); r.status != http.StatusConflict {
		t.Fatalf("token with an unknown refresh token: %d %s", r.status, r.body)
	}
	if got := s.status(t, "nohook-2"); got != string(connection.StatusReconnectRequired) {
		t.Fatalf("status %q, want reconnect_required", got)
	}
	left, err := s.store.ListOutbox(t.Context(), s.clock.Now().Add(time.Hour), 10)
	if err != nil || len(left) != 0 {
		t.Errorf("outbox without a webhook = %+v, %v; want empty", left, err)
	}
}
