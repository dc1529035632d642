package faulttest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/queuehost"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// hookReceiver is the CMS's webhook endpoint: it records every attempt and
// answers 503 while down.
type hookReceiver struct {
	*httptest.Server
	secret string
	up     atomic.Bool
	mu     sync.Mutex
	// bodies[delivery id] lists the body of every attempt; okUsers holds
	// the users whose event got a 2xx.
	bodies   map[string][]string
	users    map[string]map[string]bool // user_id -> delivery ids
	okUsers  map[string]bool
	badSigns int
	attempts int
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{secret: secret, bodies: map[string][]string{}, users: map[string]map[string]bool{}, okUsers: map[string]bool{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		id := r.Header.Get(events.DeliveryHeader)
		var ev struct {
			UserID string `json:"user_id"`
		}
		_ = json.Unmarshal(b, &ev)
		up := h.up.Load()
		h.mu.Lock()
		h.attempts++
		h.bodies[id] = append(h.bodies[id], string(b))
		if h.users[ev.UserID] == nil {
			h.users[ev.UserID] = map[string]bool{}
		}
		h.users[ev.UserID][id] = true
		if r.Header.Get(events.SignatureHeader) != events.Sign(h.secret, b) {
			h.badSigns++
		}
		if up {
			h.okUsers[ev.UserID] = true
		}
		h.mu.Unlock()
		if !up {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) counts() (attempts, ids, ok int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts, len(h.bodies), len(h.okUsers)
}

// With the CMS's receiver down, 100 connections are disconnected through
// the real handler binary, which is then SIGKILLed while deliveries are
// failing and being rescheduled. After a restart, with the receiver back,
// every event arrives with a 2xx, each with one delivery id, and every
// attempt of a delivery id carried the same body, correctly signed. The
// queue trigger is the local stand-in with host.json's settings.
func TestWebhookDeliveriesSurviveSIGKILL(t *testing.T) {
	const n = 100
	tables, _ := tablesFor(t)
	queues := azurite.QueueForTest(t)
	bin := buildHandler(t)
	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", tail(logs.String(), 80))
		}
	})

	hookSecret := randomString(32)
	recv := newHookReceiver(t, hookSecret)
	encKey := make([]byte, sealing.KeySize)
	_, _ = rand.Read(encKey)
	queueName := fmt.Sprintf("crash-%d", time.Now().UnixNano()%1_000_000)
	env := map[string]string{
		"TABLES_CONNECTION_STRING":     tables,
		"MICROSOFT_CLIENT_ID":          clientID,
		"MICROSOFT_OAUTH_CALLBACK_URL": "http://localhost:7071/api/callback",
		"MICROSOFT_CLIENT_AUTH":        config.ClientAuthSecret,
		"ALLOWED_RETURN_URLS":          "http://localhost/",
		"CMS_WEBHOOK_URL":              recv.URL + "/hooks/microsoft",
		"AzureWebJobsStorage":          queues,
		"WEBHOOK_QUEUE":                queueName,
		secrets.EnvClientSecret:        randomString(32),
		secrets.EnvCMSAPIKey:           randomString(32),
		secrets.EnvEncryptionKey:       base64.StdEncoding.EncodeToString(encKey),
		secrets.EnvWebhookSecret:       hookSecret,
	}

	// n connections, stored directly: the status changes are their
	// deletions through the handler.
	svc, err := aztables.NewServiceClientFromConnectionString(tables, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(mapEnv(env)))), tablestore.Options{Now: time.Now})
	ctx := context.Background()
	now := time.Now()
	for i := range n {
		_, err := store.Create(ctx, connection.Connection{
			UserID: fmt.Sprintf("hook-%03d", i), Status: connection.StatusConnected,
			Account:     connection.Account{ID: fmt.Sprintf("oid-%03d", i), TenantID: "tid", Email: fmt.Sprintf("u%03d@contoso.com", i), DisplayName: "User"},
			Scopes:      scopes,
			AccessToken: "at-" + randomString(8), RefreshToken: "rt-" + randomString(8),
			AccessTokenExpiresAt: now.Add(time.Hour), ConnectedAt: now, LastRefreshedAt: now, LastUsedAt: now,
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	settings, err := queuehost.ReadHostJSON(filepath.Join("..", "..", "..", "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	qs, err := storagequeue.New(storagequeue.Options{ConnectionString: queues})
	if err != nil {
		t.Fatal(err)
	}
	h := startChild(t, bin, env, logs)
	trigger := queuehost.Start(queuehost.Options{
		Queue: qs.Queue(queueName), Poison: qs.Queue(queueName + storagequeue.PoisonSuffix),
		HandlerURL: h.url, Function: "webhook", Binding: "message", Settings: settings,
		Log: zerolog.New(logs).With().Str("component", "queue-trigger").Logger(),
	})
	t.Cleanup(trigger.Stop)

	began := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	var failed atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req, _ := http.NewRequest(http.MethodDelete, h.url+fmt.Sprintf("/api/connections/hook-%03d", i), nil)
				req.Header.Set("Authorization", "Bearer "+env[secrets.EnvCMSAPIKey])
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusNoContent {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d deletions failed", failed.Load())
	}
	t.Logf("%d status changes in %v", n, time.Since(began).Round(time.Millisecond))

	// Let deliveries fail against the receiver that is down, then kill
	// the handler in the middle of them.
	waitFor(t, 30*time.Second, func() bool { a, _, _ := recv.counts(); return a >= n/2 })
	h.kill(t)
	attempts, ids, _ := recv.counts()
	t.Logf("SIGKILL after %d failed attempts of %d delivery ids", attempts, ids)

	// Restart with the receiver back.
	recv.up.Store(true)
	h = startChild(t, bin, env, logs)
	trigger.SetHandlerURL(h.url)
	restarted := time.Now()
	waitFor(t, 90*time.Second, func() bool { _, _, ok := recv.counts(); return ok == n })
	attempts, ids, ok := recv.counts()
	t.Logf("all %d events delivered %v after the restart (%d attempts, %d delivery ids)", ok, time.Since(restarted).Round(time.Millisecond), attempts, ids)

	recv.mu.Lock()
	defer recv.mu.Unlock()
	if recv.badSigns > 0 {
		t.Errorf("%d attempts with a bad signature", recv.badSigns)
	}
	for i := range n {
		user := fmt.Sprintf("hook-%03d", i)
		if len(recv.users[user]) != 1 {
			t.Errorf("%s: %d delivery ids, want 1 (the same on every attempt)", user, len(recv.users[user]))
		}
	}
	for id, bodies := range recv.bodies {
		var ev map[string]any
		if err := json.Unmarshal([]byte(bodies[0]), &ev); err != nil || ev["type"] != connection.EventDisconnected {
			t.Errorf("delivery %s: body %s", id, bodies[0])
		}
		for _, b := range bodies[1:] {
			if b != bodies[0] {
				t.Errorf("delivery %s changed its body:\n%s\n%s", id, bodies[0], b)
			}
		}
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
