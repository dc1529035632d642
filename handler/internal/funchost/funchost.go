// Package funchost speaks the Azure Functions custom-handler protocol for
// non-HTTP triggers: it decodes the invocation the host POSTs to
// /<FunctionName> ({"Data": {...}, "Metadata": {...}}) and encodes the
// answer the host expects ({"Outputs": {}, "Logs": [...], "ReturnValue": ...}).
// HTTP-triggered functions never come through here: with
// enableForwardingHttpRequest the host forwards those requests raw.
//
// It owns the wire format only (golden payloads in testdata/). It knows
// nothing of what a timer run does; the sweep is handed in as a function.
//
// The envelope is decoded strictly (a body that is not a JSON object, is over
// 64 KiB, or lacks the expected binding is refused with 400, which fails the
// invocation visibly), the TimerInfo inside it leniently: it only informs a
// run, and the host has been seen to send it in more than one shape (dates
// without an offset, a string instead of an object on a manual run), so what
// cannot be understood becomes a warning in the response's Logs rather than
// a failed sweep.
package funchost

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// InvocationIDHeader carries the host's invocation ID on every request.
const InvocationIDHeader = "X-Azure-Functions-InvocationId"

// MaxBodyBytes bounds an invocation body, as the contract bounds every
// request body. A timer invocation is well under 1 KiB.
const MaxBodyBytes = 64 << 10

// ErrInvalidInvocation is wrapped by every error of DecodeTimer: the body is
// not an invocation this handler can serve (answer 400).
var ErrInvalidInvocation = errors.New("invalid invocation")

// ErrBodyTooLarge: the body is over MaxBodyBytes. It wraps
// ErrInvalidInvocation.
var ErrBodyTooLarge = fmt.Errorf("%w: body over %d bytes", ErrInvalidInvocation, MaxBodyBytes)

// InvocationRequest is the body the host POSTs for a non-HTTP trigger:
// input bindings by name in Data, binding data (trigger metadata, "sys") in
// Metadata. Values stay raw: their shape depends on the binding.
type InvocationRequest struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata map[string]json.RawMessage `json:"Metadata"`
}

// TimerInfo is the timer trigger's input (the timers extension's TimerInfo).
type TimerInfo struct {
	Schedule TimerSchedule
	// ScheduleStatus is nil when the host has no schedule status yet (first
	// run, or useMonitor off).
	ScheduleStatus *ScheduleStatus
	// IsPastDue: this run is later than scheduled (the app was down, or a
	// previous run overran).
	IsPastDue bool
}

// TimerSchedule is what the host reveals of the schedule.
type TimerSchedule struct {
	AdjustForDST bool
}

// ScheduleStatus is the monitor's record of the schedule, in UTC. A time the
// host sent in a form this package does not recognise stays zero (and the
// invocation carries a warning).
type ScheduleStatus struct {
	Last        time.Time
	Next        time.Time
	LastUpdated time.Time
}

// Invocation is what identifies one run.
type Invocation struct {
	// ID is the host's invocation ID from the X-Azure-Functions-InvocationId
	// header: TimerHandler sets it; DecodeTimer, which sees only the body,
	// leaves it empty.
	ID string
	// FunctionName is Metadata.sys.MethodName: the function's folder name.
	FunctionName string
	// UtcNow is Metadata.sys.UtcNow: when the host started the invocation.
	UtcNow time.Time
	// Metadata is the host's Metadata as sent.
	Metadata map[string]json.RawMessage
	// Warnings lists what was tolerated but not understood; TimerHandler
	// returns them in Logs, where the host records them with the run.
	Warnings []string
}

// DecodeTimer reads an invocation body (at most MaxBodyBytes) and returns
// the TimerInfo of the input binding named binding (the "name" in
// function.json) and what the body says of the invocation. Every error wraps
// ErrInvalidInvocation.
func DecodeTimer(r io.Reader, binding string) (TimerInfo, Invocation, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return TimerInfo{}, Invocation{}, fmt.Errorf("funchost: decode timer: %w: read body: %w", ErrInvalidInvocation, err)
	}
	if len(body) > MaxBodyBytes {
		return TimerInfo{}, Invocation{}, fmt.Errorf("funchost: decode timer: %w", ErrBodyTooLarge)
	}
	var req InvocationRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return TimerInfo{}, Invocation{}, fmt.Errorf("funchost: decode timer: %w: %w", ErrInvalidInvocation, err)
	}
	raw, ok := lookup(req.Data, binding)
	if !ok {
		return TimerInfo{}, Invocation{}, fmt.Errorf("funchost: decode timer: %w: no binding %q in Data", ErrInvalidInvocation, binding)
	}
	inv := Invocation{Metadata: req.Metadata}
	inv.readSys()
	t := decodeTimerInfo(raw, binding, &inv.Warnings)
	return t, inv, nil
}

// lookup finds a binding by its exact name, then ignoring case: function.json
// names are case-insensitive to the host.
func lookup(m map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// readSys reads the host's system binding data ("sys": MethodName, UtcNow,
// RandGuid).
func (inv *Invocation) readSys() {
	raw, ok := lookup(inv.Metadata, "sys")
	if !ok || isNull(raw) {
		return
	}
	var sys struct {
		MethodName json.RawMessage
		UtcNow     json.RawMessage
	}
	if err := json.Unmarshal(raw, &sys); err != nil {
		inv.warnf("Metadata.sys is not an object: %s", clip(raw))
		return
	}
	if len(sys.MethodName) > 0 && !isNull(sys.MethodName) {
		if err := json.Unmarshal(sys.MethodName, &inv.FunctionName); err != nil {
			inv.warnf("Metadata.sys.MethodName is not a string: %s", clip(sys.MethodName))
		}
	}
	inv.UtcNow = readTime(sys.UtcNow, "Metadata.sys.UtcNow", &inv.Warnings)
}

func (inv *Invocation) warnf(format string, args ...any) {
	inv.Warnings = append(inv.Warnings, "funchost: "+fmt.Sprintf(format, args...))
}

// decodeTimerInfo reads a TimerInfo leniently. The host serialises the
// extension's TimerInfo object with Newtonsoft (PascalCase keys); when the
// function is run by hand through the admin API the binding holds the
// caller's input string instead, so a string is unwrapped if it holds an
// object and otherwise taken as "no TimerInfo".
func decodeTimerInfo(raw json.RawMessage, binding string, warnings *[]string) TimerInfo {
	warn := func(format string, args ...any) {
		*warnings = append(*warnings, "funchost: "+fmt.Sprintf(format, args...))
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			inner := []byte(strings.TrimSpace(s))
			if len(inner) > 0 && inner[0] == '{' && json.Valid(inner) {
				raw = inner
			}
		}
	}
	if len(raw) == 0 || raw[0] != '{' {
		warn("Data.%s holds no TimerInfo (a manual run?): %s", binding, clip(raw))
		return TimerInfo{}
	}
	var w struct {
		Schedule       json.RawMessage
		ScheduleStatus json.RawMessage
		IsPastDue      json.RawMessage
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		warn("Data.%s: %v", binding, err)
		return TimerInfo{}
	}
	var t TimerInfo
	if len(w.Schedule) > 0 && !isNull(w.Schedule) {
		var s struct{ AdjustForDST json.RawMessage }
		if err := json.Unmarshal(w.Schedule, &s); err != nil {
			warn("Data.%s.Schedule is not an object: %s", binding, clip(w.Schedule))
		} else {
			t.Schedule.AdjustForDST = readBool(s.AdjustForDST, "Data."+binding+".Schedule.AdjustForDST", warnings)
		}
	}
	if len(w.ScheduleStatus) > 0 && !isNull(w.ScheduleStatus) {
		var s struct{ Last, Next, LastUpdated json.RawMessage }
		if err := json.Unmarshal(w.ScheduleStatus, &s); err != nil {
			warn("Data.%s.ScheduleStatus is not an object: %s", binding, clip(w.ScheduleStatus))
		} else {
			p := "Data." + binding + ".ScheduleStatus."
			t.ScheduleStatus = &ScheduleStatus{
				Last:        readTime(s.Last, p+"Last", warnings),
				Next:        readTime(s.Next, p+"Next", warnings),
				LastUpdated: readTime(s.LastUpdated, p+"LastUpdated", warnings),
			}
		}
	}
	t.IsPastDue = readBool(w.IsPastDue, "Data."+binding+".IsPastDue", warnings)
	return t
}

// readBool accepts a JSON boolean or the strings "true"/"false".
func readBool(raw json.RawMessage, field string, warnings *[]string) bool {
	if len(raw) == 0 || isNull(raw) {
		return false
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			return true
		case "false":
			return false
		}
	}
	*warnings = append(*warnings, fmt.Sprintf("funchost: %s is not a boolean: %s", field, clip(raw)))
	return false
}

// readTime reads a host date string; absent or null is the zero time.
func readTime(raw json.RawMessage, field string, warnings *[]string) time.Time {
	if len(raw) == 0 || isNull(raw) {
		return time.Time{}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if t, ok := ParseHostTime(s); ok {
			return t
		}
	}
	*warnings = append(*warnings, fmt.Sprintf("funchost: %s is not a recognised time: %s", field, clip(raw)))
	return time.Time{}
}

// hostTimeLayouts are the forms in which the host's Newtonsoft.Json writes a
// .NET DateTime or DateTimeOffset: ISO 8601 with an offset ("+00:00") or "Z"
// and up to 7 fractional digits, or without any offset for a DateTime of
// unspecified kind; plus DateTime.ToString() under the invariant culture,
// which some binding data uses. Go accepts a fractional second after the
// seconds field of any of them.
var hostTimeLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"01/02/2006 15:04:05",
}

// ParseHostTime parses a date as the Functions host writes it and returns it
// in UTC. A date without an offset is taken as UTC: the host runs schedules
// in UTC (the contract never sets TZ or WEBSITE_TIME_ZONE). Dates outside
// .NET's range (years 1 to 9999) are refused.
func ParseHostTime(s string) (time.Time, bool) {
	s = strings.ToUpper(strings.TrimSpace(s))
	for _, layout := range hostTimeLayouts {
		t, err := time.Parse(layout, s)
		if err != nil {
			continue
		}
		t = t.UTC()
		if t.Year() < 1 || t.Year() > 9999 {
			return time.Time{}, false
		}
		return t, true
	}
	return time.Time{}, false
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// clip keeps warnings short: they quote what the host sent.
func clip(raw []byte) string {
	const n = 80
	if len(raw) <= n {
		return string(raw)
	}
	return string(raw[:n]) + "..."
}
