package funchost

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecodeTimer: whatever the body, DecodeTimer does not panic, every
// error is an ErrInvalidInvocation, and a TimerInfo it accepts survives a
// round trip through the host's format unchanged (so nothing it returns is
// half-parsed). The seed corpus is in testdata/fuzz/FuzzDecodeTimer plus the
// golden requests.
func FuzzDecodeTimer(f *testing.F) {
	for _, name := range []string{"timer_request.json", "timer_request_null_status.json"} {
		f.Add(readGolden(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ti, inv, err := DecodeTimer(bytes.NewReader(body), "timer")
		if err != nil {
			if !errors.Is(err, ErrInvalidInvocation) {
				t.Fatalf("error %v is not an ErrInvalidInvocation", err)
			}
			return
		}
		again, _, err := DecodeTimer(bytes.NewReader(hostBody(t, ti)), "timer")
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", ti, err)
		}
		if !equalTimer(ti, again) {
			t.Fatalf("round trip changed %+v (status %+v) into %+v (status %+v)", ti, ti.ScheduleStatus, again, again.ScheduleStatus)
		}
		// Warnings quote the body: they must still make a valid response.
		rec := httptest.NewRecorder()
		_ = writeResponse(rec, InvocationResponse{Logs: inv.Warnings})
		if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("response for warnings %q: %d %s", inv.Warnings, rec.Code, rec.Body)
		}
	})
}

// hostBody writes ti as the host would send it.
func hostBody(t *testing.T, ti TimerInfo) []byte {
	t.Helper()
	type status struct{ Last, Next, LastUpdated string }
	wire := map[string]any{"Schedule": map[string]bool{"AdjustForDST": ti.Schedule.AdjustForDST}, "IsPastDue": ti.IsPastDue, "ScheduleStatus": nil}
	if s := ti.ScheduleStatus; s != nil {
		f := func(x time.Time) string { return x.Format(time.RFC3339Nano) }
		wire["ScheduleStatus"] = status{f(s.Last), f(s.Next), f(s.LastUpdated)}
	}
	b, err := json.Marshal(map[string]any{"Data": map[string]any{"timer": wire}, "Metadata": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeQueue: whatever the body, DecodeQueue does not panic, every
// error is an ErrInvalidInvocation, and a message it accepts comes back
// unchanged when the host wraps it again (so the double decoding never
// alters a message's bytes).
func FuzzDecodeQueue(f *testing.F) {
	f.Add(readGolden(f, "queue_request.json"))
	f.Add([]byte(`{"Data":{"message":"\"hello\""},"Metadata":{"DequeueCount":2}}`))
	f.Add([]byte(`{"Data":{"message":{"a":1}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, inv, err := DecodeQueue(bytes.NewReader(body), "message")
		if err != nil {
			if !errors.Is(err, ErrInvalidInvocation) {
				t.Fatalf("error %v is not an ErrInvalidInvocation", err)
			}
			return
		}
		if utf8.Valid(m.Body) {
			once, _ := json.Marshal(string(m.Body))
			twice, _ := json.Marshal(map[string]any{"Data": map[string]string{"message": string(once)}})
			again, _, err := DecodeQueue(bytes.NewReader(twice), "message")
			if err != nil || !bytes.Equal(again.Body, m.Body) {
				t.Fatalf("the host's wrapping of %q decoded to %q, %v", m.Body, again.Body, err)
			}
		}
		rec := httptest.NewRecorder()
		_ = writeResponse(rec, InvocationResponse{Logs: inv.Warnings})
		if rec.Code != http.StatusOK || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("response for warnings %q: %d %s", inv.Warnings, rec.Code, rec.Body)
		}
	})
}
