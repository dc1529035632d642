package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// seed stores connected users directly, as the handler would after a
// connect, so their deletions are status changes to report.
func (s *stack) seed(t *testing.T, users ...string) {
	t.Helper()
	svc, err := aztables.NewServiceClientFromConnectionString(s.Settings["TABLES_CONNECTION_STRING"], nil)
	if err != nil {
		t.Fatal(err)
	}
	st := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(func(k string) string { return s.Settings[k] }))), tablestore.Options{Now: time.Now})
	now := time.Now()
	for _, u := range users {
		_, err := st.Create(context.Background(), connection.Connection{
			UserID: u, Status: connection.StatusConnected, Account: connection.Account{ID: "oid-" + u, TenantID: "tid", Email: u + "@contoso.com"},
			Scopes: []string{"User.Read", "offline_access"}, AccessToken: "at", RefreshToken: "rt",
			AccessTokenExpiresAt: now.Add(time.Hour), ConnectedAt: now, LastRefreshedAt: now, LastUsedAt: now,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A receiver that hangs for 30 s delays no API call: the requests that
// cause events (a connect's completion, the token API finding a revoked
// account, deletions) only put the event on the queue; the queue trigger
// waits for the CMS, on its own.
func TestHangingReceiverDelaysNoAPICall(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	holding := 0
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		mu.Lock()
		holding++
		mu.Unlock()
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(release) }) // before hook.Close
	s := startWith(t, time.Minute, nil, map[string]string{"CMS_WEBHOOK_URL": hook.URL, "CMS_WEBHOOK_SECRET": "hook-secret"})
	users := []string{"hang-1", "hang-2", "hang-3", "hang-4", "hang-5"}
	s.seed(t, users...)

	timed := func(what string, f func()) {
		t.Helper()
		began := time.Now()
		f()
		if d := time.Since(began); d > 3*time.Second {
			t.Errorf("%s took %v while the receiver hangs", what, d)
		}
	}
	timed("the first deletion", func() { s.cms(t, http.MethodDelete, "/api/connections/"+users[0], nil) })
	// The receiver now holds the first delivery.
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		h := holding
		mu.Unlock()
		if h > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging receiver got no delivery")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, u := range users[1:] {
		timed("DELETE "+u, func() {
			if r := s.cms(t, http.MethodDelete, "/api/connections/"+u, nil); r.status != http.StatusNoContent {
				t.Errorf("DELETE %s: %d", u, r.status)
			}
		})
	}
	timed("a connect", func() { s.connect(t, "hang-ada", "ada@contoso.com") })
	if err := s.IDP.RevokeAccount(adaOID); err != nil {
		t.Fatal(err)
	}
	timed("a token call that finds the account revoked", func() {
		if r := s.token(t, "hang-ada"); r.status != http.StatusConflict {
			t.Errorf("token: %d %s", r.status, r.body)
		}
	})
	if n := len(s.logs.Events("webhook_enqueued")); n != len(users)+2 {
		t.Errorf("%d events enqueued, want %d", n, len(users)+2)
	}
}

// TestDeliveryLatency measures the time from the API call that caused an
// event returning to the CMS receiving it, through the local queue trigger
// (host.json's maxPollingInterval) and Azurite, with events spaced out so
// the trigger's polling backs off between them as on a quiet day.
// WEBHOOK_LATENCY_EVENTS sets how many (default 40) and
// WEBHOOK_LATENCY_GAP the longest pause between two (default 600ms; a
// pause over maxPollingInterval shows an idle queue); -v prints the table
// docs/reliability.md records.
func TestDeliveryLatency(t *testing.T) {
	n, gap := 40, 600*time.Millisecond
	if v, err := strconv.Atoi(os.Getenv("WEBHOOK_LATENCY_EVENTS")); err == nil && v > 0 {
		n = v
	}
	if v, err := time.ParseDuration(os.Getenv("WEBHOOK_LATENCY_GAP")); err == nil && v > 0 {
		gap = v
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		b, _ := io.ReadAll(r.Body)
		var ev struct {
			UserID string `json:"user_id"`
		}
		_ = json.Unmarshal(b, &ev)
		mu.Lock()
		if _, seen := arrived[ev.UserID]; !seen {
			arrived[ev.UserID] = at
		}
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	s := startWith(t, time.Minute, nil, map[string]string{"CMS_WEBHOOK_URL": hook.URL, "CMS_WEBHOOK_SECRET": "hook-secret"})
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("lat-%04d", i)
	}
	s.seed(t, users...)
	returned := map[string]time.Time{}
	for _, u := range users {
		time.Sleep(time.Duration(rand.Int64N(int64(gap))))
		s.cms(t, http.MethodDelete, "/api/connections/"+u, nil)
		returned[u] = time.Now()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(arrived)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events arrived", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lat := make([]time.Duration, 0, n)
	for _, u := range users {
		lat = append(lat, max(arrived[u].Sub(returned[u]), 0))
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("webhook delivery latency, API call returned -> CMS received, %d events %s apart at most, local queue trigger (maxPollingInterval 2s):", n, gap)
	t.Logf("| p50 | p90 | p99 | max |")
	t.Logf("| %v | %v | %v | %v |", q(0.50).Round(time.Millisecond), q(0.90).Round(time.Millisecond), q(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if q(0.99) > 5*time.Second {
		t.Errorf("p99 %v: a healthy delivery should take seconds at most", q(0.99))
	}
}

// Without CMS_WEBHOOK_URL the queue trigger's route answers 503
// not_configured: the host keeps the message (and poisons it after
// maxDequeueCount) instead of losing it.
func TestWebhookFunctionWithoutWebhookKeepsTheMessage(t *testing.T) {
	s := start(t, nil)
	payload, err := os.ReadFile("../funchost/testdata/queue_request.json")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.HandlerURL+"/webhook", bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", "0b7e3c55-9d3c-4b1e-8a57-3f0a1c2d4e6f")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := response{status: resp.StatusCode, body: b}
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "not_configured" {
		t.Errorf("POST /webhook without a webhook: %d %s", r.status, b)
	}
}
