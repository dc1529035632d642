package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// goldenMessage is the message text inside queue_request.json.
const goldenMessage = `{"delivery_id":"6f1c2b9e-8d4a-4e7b-9c3d-2a1b0e9f8d7c","body":"{\"type\":\"connection.disconnected\",\"user_id\":\"ada-42\",\"at\":\"2026-11-25T23:34:58Z\",\"account\":{\"id\":\"00000000-0000-0000-66f3-3332eca7ea81\",\"tenant_id\":\"9188040d-6c67-4c5b-b112-36a304b66dad\",\"email\":\"ada@contoso.com\",\"display_name\":\"Ada Lovelace\"},\"reason\":null}","attempt":1,"first_enqueued_at":"2026-11-25T23:34:58.1234567Z"}`

func TestDecodeQueueGolden(t *testing.T) {
	m, inv, err := DecodeQueue(bytes.NewReader(readGolden(t, "queue_request.json")), "message")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body) != goldenMessage {
		t.Errorf("Body = %s\nwant %s", m.Body, goldenMessage)
	}
	if m.ID != "9a3d0b62-4f5e-4c1a-8b7d-1e2f3a4b5c6d" || m.PopReceipt != "AgAAAAMAAAAAAAAAnXj8Zk1f3AE=" || m.DequeueCount != 1 {
		t.Errorf("id %q pop receipt %q dequeue count %d: the embedded quotes must go", m.ID, m.PopReceipt, m.DequeueCount)
	}
	if !m.InsertionTime.Equal(utc("2026-11-25T23:34:58Z")) || !m.NextVisibleTime.Equal(utc("2026-11-25T23:45:00Z")) || m.ExpirationTime.Year() != 9999 {
		t.Errorf("times %s %s %s", m.InsertionTime, m.NextVisibleTime, m.ExpirationTime)
	}
	if inv.FunctionName != "webhook" || !inv.UtcNow.Equal(utc("2026-11-25T23:35:00.0123457Z")) {
		t.Errorf("invocation %q at %s", inv.FunctionName, inv.UtcNow)
	}
	if len(inv.Warnings) != 0 {
		t.Errorf("warnings %q for the host's own payload", inv.Warnings)
	}
}

func TestDecodeQueueShapes(t *testing.T) {
	tests := []struct {
		name, body, want string
		dequeue          int64
		warn             string
	}{
		{"double-encoded (the host)", `{"Data":{"message":"\"hello\""}}`, "hello", 0, ""},
		{"double-encoded JSON", `{"Data":{"message":"\"{\\\"a\\\":1}\""}}`, `{"a":1}`, 0, ""},
		{"once-encoded (Microsoft's doc)", `{"Data":{"message":"{\"a\":1}"}}`, `{"a":1}`, 0, ""},
		{"plain text", `{"Data":{"message":"hello"}}`, "hello", 0, ""},
		{"a raw object", `{"Data":{"message":{"a":1}}}`, `{"a":1}`, 0, ""},
		{"a text that starts with a quote but is no literal", `{"Data":{"message":"\"half"}}`, `"half`, 0, ""},
		{"binding in another case", `{"Data":{"Message":"\"x\""}}`, "x", 0, ""},
		{"DequeueCount as a number", `{"Data":{"message":"\"x\""},"Metadata":{"DequeueCount":3}}`, "x", 3, ""},
		{"DequeueCount as a string", `{"Data":{"message":"\"x\""},"Metadata":{"dequeueCount":"4"}}`, "x", 4, ""},
		{"DequeueCount unreadable", `{"Data":{"message":"\"x\""},"Metadata":{"DequeueCount":"many"}}`, "x", 0, "DequeueCount is not a number"},
		{"time unreadable", `{"Data":{"message":"\"x\""},"Metadata":{"InsertionTime":"soon"}}`, "x", 0, "InsertionTime is not a recognised time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, inv, err := DecodeQueue(strings.NewReader(tt.body), "message")
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != tt.want || m.DequeueCount != tt.dequeue {
				t.Errorf("Body %q dequeue %d, want %q %d", m.Body, m.DequeueCount, tt.want, tt.dequeue)
			}
			if got := strings.Join(inv.Warnings, "|"); (tt.warn == "") != (got == "") || !strings.Contains(got, tt.warn) {
				t.Errorf("warnings %q, want %q", got, tt.warn)
			}
		})
	}
}

func TestDecodeQueueRejects(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":       `nope`,
		"no binding":     `{"Data":{"other":"\"x\""}}`,
		"null message":   `{"Data":{"message":null}}`,
		"number message": `{"Data":{"message":7}}`,
		"too large":      `{"Data":{"message":"` + strings.Repeat("a", MaxBodyBytes) + `"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := DecodeQueue(strings.NewReader(body), "message"); !errors.Is(err, ErrInvalidInvocation) {
				t.Errorf("err = %v, want ErrInvalidInvocation", err)
			}
		})
	}
}

func TestQueueHandlerGolden(t *testing.T) {
	logs := &logtest.Buffer{}
	var got QueueMessage
	srv := hostServer(t, QueueHandler("message", func(ctx context.Context, inv Invocation, m QueueMessage) ([]string, error) {
		got = m
		return nil, nil
	}), logs)
	resp, body := invoke(t, srv.URL, readGolden(t, "queue_request.json"), "7c9e6679-7425-40de-944b-e07fc1f90ae7")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	checkGolden(t, "queue_response.json", body)
	if string(got.Body) != goldenMessage {
		t.Errorf("fn got %s", got.Body)
	}
}

// A failing fn answers 500 (the host then releases the message), a bad body
// 400, another method 405, and the failure is logged with the message id.
func TestQueueHandlerFailures(t *testing.T) {
	logs := &logtest.Buffer{}
	srv := hostServer(t, QueueHandler("message", func(ctx context.Context, inv Invocation, m QueueMessage) ([]string, error) {
		return []string{"tried"}, errors.New("storage down")
	}), logs)
	resp, body := invoke(t, srv.URL, readGolden(t, "queue_request.json"), "7c9e6679-7425-40de-944b-e07fc1f90ae7")
	var e map[string]any
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusInternalServerError || e["error"] != "internal_error" || strings.Contains(logs.String(), "storage down") == false {
		t.Errorf("failure: %d %v; logs %s", resp.StatusCode, e, logs.String())
	}
	if !logs.Has("invocation_failed", "message_id", "9a3d0b62-4f5e-4c1a-8b7d-1e2f3a4b5c6d") {
		t.Errorf("invocation_failed without the message id: %s", logs.String())
	}
	if resp := post(t, srv.URL, []byte(`{"Data":{}}`)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no binding: %d", resp.StatusCode)
	}
	resp, err := http.Get(srv.URL + "/webhook")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func post(t *testing.T, url string, body []byte) *http.Response {
	t.Helper()
	resp, _ := invoke(t, url, body, "7c9e6679-7425-40de-944b-e07fc1f90ae7")
	return resp
}
