package funchost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/logtest"
)

var update = flag.Bool("update", false, "rewrite the response golden files from the code")

// summary mirrors the contract's ReturnValue of POST /refresh.
type summary struct {
	Due               int   `json:"due"`
	Refreshed         int   `json:"refreshed"`
	ReconnectRequired int   `json:"reconnect_required"`
	TransientFailures int   `json:"transient_failures"`
	Skipped           int   `json:"skipped"`
	DurationMS        int64 `json:"duration_ms"`
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readGolden(t, name)
	if !bytes.Equal(got, want) {
		t.Errorf("response body differs from %s:\n got %s\nwant %s", path, got, want)
	}
}

// hostServer serves h on 127.0.0.1 the way the handler's server will: with
// a zerolog logger in each request's context.
func hostServer(t *testing.T, h http.Handler, logs io.Writer) *httptest.Server {
	t.Helper()
	logger := zerolog.New(logs)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(logger.WithContext(r.Context())))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// invoke POSTs body as the host does (its headers included).
func invoke(t *testing.T, url string, body []byte, invocationID string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/refresh", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1044.0.0")
	req.Header.Set("X-Azure-Functions-HostVersion", "4.1044.0.0")
	req.Header.Set(InvocationIDHeader, invocationID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestTimerHandlerGolden(t *testing.T) {
	logs := &logtest.Buffer{}
	var gotInv Invocation
	var gotTimer TimerInfo
	h := TimerHandler("timer", func(ctx context.Context, inv Invocation, ti TimerInfo) (any, []string, error) {
		gotInv, gotTimer = inv, ti
		zerolog.Ctx(ctx).Info().Msg("sweep_started")
		return summary{Due: 3, Refreshed: 2, ReconnectRequired: 1, DurationMS: 1234}, []string{"refresh: 3 due, 2 refreshed"}, nil
	})
	srv := hostServer(t, h, logs)

	resp, body := invoke(t, srv.URL, readGolden(t, "timer_request.json"), "0f8fad5b-d9cb-469f-a165-70867728950e")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	checkGolden(t, "timer_response.json", body)

	if gotInv.ID != "0f8fad5b-d9cb-469f-a165-70867728950e" || gotInv.FunctionName != "refresh" {
		t.Errorf("fn got invocation %q of %q, want the header's id and sys.MethodName", gotInv.ID, gotInv.FunctionName)
	}
	if gotTimer.ScheduleStatus == nil || !gotTimer.Schedule.AdjustForDST {
		t.Errorf("fn got TimerInfo %+v, want the golden one", gotTimer)
	}
	var found bool
	for _, l := range logs.Lines(t) {
		if l["message"] == "sweep_started" {
			found = true
			if l["invocation_id"] != gotInv.ID || l["function"] != "refresh" {
				t.Errorf("fn's log line %v lacks the invocation's fields", l)
			}
		}
	}
	if !found {
		t.Error("fn's context carried no logger")
	}
}

// TestResponseAsTheHostReadsIt decodes the golden response the way the host
// does (case-insensitively, into Outputs/Logs/ReturnValue) and checks the
// contract's summary keys are all there.
func TestResponseAsTheHostReadsIt(t *testing.T) {
	var r struct {
		Outputs     map[string]json.RawMessage
		Logs        []string
		ReturnValue map[string]json.RawMessage
	}
	if err := json.Unmarshal(readGolden(t, "timer_response.json"), &r); err != nil {
		t.Fatal(err)
	}
	if r.Outputs == nil || len(r.Outputs) != 0 || r.Logs == nil {
		t.Errorf("Outputs %v Logs %v, want {} and an array", r.Outputs, r.Logs)
	}
	for _, k := range []string{"due", "refreshed", "reconnect_required", "transient_failures", "skipped", "duration_ms"} {
		if _, ok := r.ReturnValue[k]; !ok {
			t.Errorf("ReturnValue lacks %q", k)
		}
	}
}

func TestTimerHandlerNullStatus(t *testing.T) {
	called := false
	h := TimerHandler("timer", func(_ context.Context, _ Invocation, ti TimerInfo) (any, []string, error) {
		called = true
		if ti.ScheduleStatus != nil || !ti.IsPastDue {
			t.Errorf("TimerInfo = %+v, want no status and past due", ti)
		}
		return nil, nil, nil
	})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/refresh", bytes.NewReader(readGolden(t, "timer_request_null_status.json")))
	h.ServeHTTP(rec, req)
	if !called || rec.Code != http.StatusOK {
		t.Fatalf("called %t, status %d", called, rec.Code)
	}
	if got, want := rec.Body.String(), `{"Outputs":{},"Logs":[],"ReturnValue":null}`+"\n"; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}

func TestTimerHandlerFailure(t *testing.T) {
	logs := &logtest.Buffer{}
	secretDetail := "tablestore: list: dial tcp 10.0.0.7:443: i/o timeout"
	h := TimerHandler("timer", func(context.Context, Invocation, TimerInfo) (any, []string, error) {
		return summary{Due: 1}, []string{"refresh: 1 due, 0 refreshed"}, errors.New(secretDetail)
	})
	srv := hostServer(t, h, logs)
	resp, body := invoke(t, srv.URL, readGolden(t, "timer_request.json"), "inv-42")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500 (a non-2xx fails the invocation)", resp.StatusCode)
	}
	checkGolden(t, "timer_response_error.json", body)
	if bytes.Contains(body, []byte("10.0.0.7")) {
		t.Errorf("the body leaks the error's detail: %s", body)
	}
	var logged bool
	for _, l := range logs.Lines(t) {
		if l["message"] == "invocation_failed" && l["level"] == "error" && l["invocation_id"] == "inv-42" && l["error"] == secretDetail {
			logged = true
		}
	}
	if !logged {
		t.Errorf("no invocation_failed line with the error and invocation id; got %v", logs.Lines(t))
	}
}

func TestTimerHandlerRejects(t *testing.T) {
	tests := []struct {
		name   string
		method string
		body   string
		status int
		code   string
	}{
		{"malformed body", http.MethodPost, `{"Data":`, http.StatusBadRequest, "invalid_request"},
		{"missing binding", http.MethodPost, `{"Data":{"other":{}}}`, http.StatusBadRequest, "invalid_request"},
		{"over 64 KiB", http.MethodPost, `{"Data":{"timer":{}}}` + strings.Repeat(" ", MaxBodyBytes), http.StatusBadRequest, "invalid_request"},
		{"GET", http.MethodGet, "", http.StatusMethodNotAllowed, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := TimerHandler("timer", func(context.Context, Invocation, TimerInfo) (any, []string, error) {
				t.Error("fn called for a rejected request")
				return nil, nil, nil
			})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/refresh", strings.NewReader(tt.body)))
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			var e struct {
				Error   string
				Message string
				Logs    []string
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
			if e.Error != tt.code || e.Message == "" || e.Logs == nil {
				t.Errorf("body = %s, want error %q, a message and Logs []", rec.Body, tt.code)
			}
			if tt.method == http.MethodGet && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want POST", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestTimerHandlerReportsWarnings(t *testing.T) {
	logs := &logtest.Buffer{}
	called := false
	h := TimerHandler("timer", func(context.Context, Invocation, TimerInfo) (any, []string, error) {
		called = true
		return "ok", []string{"swept"}, nil
	})
	srv := hostServer(t, h, logs)
	// A run started by hand through the admin API carries its input string.
	resp, body := invoke(t, srv.URL, []byte(`{"Data":{"timer":"\"\""},"Metadata":{}}`), "inv-manual")
	if resp.StatusCode != http.StatusOK || !called {
		t.Fatalf("status %d, called %t: a manual run must still sweep", resp.StatusCode, called)
	}
	var r InvocationResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Logs) != 2 || !strings.Contains(r.Logs[0], "holds no TimerInfo") || r.Logs[1] != "swept" {
		t.Errorf("Logs = %q, want the warning then fn's log", r.Logs)
	}
	var logged bool
	for _, l := range logs.Lines(t) {
		logged = logged || (l["message"] == "invocation_warning" && l["invocation_id"] == "inv-manual")
	}
	if !logged {
		t.Error("the warning was not logged")
	}
}

func TestWriteResponse(t *testing.T) {
	tests := []struct {
		name   string
		resp   InvocationResponse
		status int
		want   string
	}{
		{"nil outputs and logs", InvocationResponse{}, http.StatusOK, `{"Outputs":{},"Logs":[],"ReturnValue":null}` + "\n"},
		{"values kept", InvocationResponse{Outputs: map[string]any{"out": 1}, Logs: []string{"a<b&c"}, ReturnValue: []int{1}}, http.StatusOK,
			`{"Outputs":{"out":1},"Logs":["a<b&c"],"ReturnValue":[1]}` + "\n"},
		{"unencodable return value", InvocationResponse{Logs: []string{"x"}, ReturnValue: math.Inf(1)}, http.StatusInternalServerError,
			`{"error":"internal_error","message":"the invocation's result could not be encoded","Outputs":{},"Logs":["x"],"ReturnValue":null}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			_ = writeResponse(rec, tt.resp)
			if rec.Code != tt.status || rec.Body.String() != tt.want {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.want)
			}
		})
	}
}
