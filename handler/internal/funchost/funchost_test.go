package funchost

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// equalTimer compares with time.Equal, not ==, so that location pointers do
// not matter.
func equalTimer(a, b TimerInfo) bool {
	if a.Schedule != b.Schedule || a.IsPastDue != b.IsPastDue || (a.ScheduleStatus == nil) != (b.ScheduleStatus == nil) {
		return false
	}
	if a.ScheduleStatus == nil {
		return true
	}
	x, y := a.ScheduleStatus, b.ScheduleStatus
	return x.Last.Equal(y.Last) && x.Next.Equal(y.Next) && x.LastUpdated.Equal(y.LastUpdated)
}

func TestDecodeTimerGolden(t *testing.T) {
	tests := []struct {
		file     string
		want     TimerInfo
		wantNow  time.Time
		wantName string
	}{
		{
			file: "timer_request.json",
			want: TimerInfo{
				Schedule: TimerSchedule{AdjustForDST: true},
				ScheduleStatus: &ScheduleStatus{
					Last:        utc("2026-11-25T23:30:00.0061742Z"),
					Next:        utc("2026-11-25T23:35:00Z"),
					LastUpdated: utc("2026-11-25T23:30:00.0061742Z"),
				},
			},
			wantNow:  utc("2026-11-25T23:35:00.0123457Z"),
			wantName: "refresh",
		},
		{
			file:     "timer_request_null_status.json",
			want:     TimerInfo{Schedule: TimerSchedule{AdjustForDST: true}, IsPastDue: true},
			wantNow:  utc("2026-11-25T23:35:00.0123457Z"),
			wantName: "refresh",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, inv, err := DecodeTimer(bytes.NewReader(readGolden(t, tt.file)), "timer")
			if err != nil {
				t.Fatalf("DecodeTimer: %v", err)
			}
			if !equalTimer(got, tt.want) {
				t.Errorf("TimerInfo = %+v (status %+v), want %+v (status %+v)", got, got.ScheduleStatus, tt.want, tt.want.ScheduleStatus)
			}
			if inv.FunctionName != tt.wantName || !inv.UtcNow.Equal(tt.wantNow) {
				t.Errorf("invocation = %q at %s, want %q at %s", inv.FunctionName, inv.UtcNow, tt.wantName, tt.wantNow)
			}
			if _, ok := inv.Metadata["sys"]; !ok {
				t.Errorf("Metadata = %v, want the host's sys kept", inv.Metadata)
			}
			if len(inv.Warnings) != 0 {
				t.Errorf("warnings %q for the host's own payload", inv.Warnings)
			}
			if inv.ID != "" {
				t.Errorf("ID = %q: the body does not carry it", inv.ID)
			}
		})
	}
}

func TestDecodeTimerIsLenientInside(t *testing.T) {
	last := utc("2026-11-25T23:30:00Z")
	status := func(l time.Time) *ScheduleStatus { return &ScheduleStatus{Last: l, Next: l, LastUpdated: l} }
	withDates := func(d string) string {
		return `{"Data":{"timer":{"ScheduleStatus":{"Last":"` + d + `","Next":"` + d + `","LastUpdated":"` + d + `"}}}}`
	}
	tests := []struct {
		name     string
		body     string
		want     TimerInfo
		warnings []string // substrings, in order
	}{
		{"camelCase keys", `{"data":{"timer":{"schedule":{"adjustForDST":true},"scheduleStatus":{"last":"2026-11-25T23:30:00Z","next":"2026-11-25T23:30:00Z","lastUpdated":"2026-11-25T23:30:00Z"},"isPastDue":true}},"metadata":{}}`,
			TimerInfo{Schedule: TimerSchedule{AdjustForDST: true}, ScheduleStatus: status(last), IsPastDue: true}, nil},
		{"date without offset is UTC", withDates("2026-11-25T23:30:00"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"date with 7 fractional digits, no offset", withDates("2026-11-25T23:30:00.0000000"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"date with Z", withDates("2026-11-25T23:30:00Z"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"date with offset", withDates("2026-11-26T00:30:00+01:00"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"date with offset without colon", withDates("2026-11-25T18:30:00-0500"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"date with a space", withDates("2026-11-25 23:30:00"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"invariant-culture date", withDates("11/25/2026 23:30:00"), TimerInfo{ScheduleStatus: status(last)}, nil},
		{"DateTime.MinValue is zero", withDates("0001-01-01T00:00:00"), TimerInfo{ScheduleStatus: status(time.Time{})}, nil},
		{"null dates are zero", `{"Data":{"timer":{"ScheduleStatus":{"Last":null}}}}`, TimerInfo{ScheduleStatus: status(time.Time{})}, nil},
		{"unknown fields everywhere",
			`{"Data":{"timer":{"Schedule":{"AdjustForDST":false,"Kind":"cron"},"IsPastDue":false,"Extra":[1,2]},"other":42},"Metadata":{"RetryContext":{"RetryCount":1},"sys":{"MethodName":"refresh","Unknown":true}},"Extra":{}}`,
			TimerInfo{}, nil},
		{"ScheduleStatus absent", `{"Data":{"timer":{"IsPastDue":true}}}`, TimerInfo{IsPastDue: true}, nil},
		{"binding name in another case", `{"Data":{"Timer":{"IsPastDue":true}}}`, TimerInfo{IsPastDue: true}, nil},
		{"TimerInfo as a JSON string", `{"Data":{"timer":"{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":null,\"IsPastDue\":true}"}}`,
			TimerInfo{Schedule: TimerSchedule{AdjustForDST: true}, IsPastDue: true}, nil},
		{"IsPastDue as a string", `{"Data":{"timer":{"IsPastDue":"True"}}}`, TimerInfo{IsPastDue: true}, nil},
		{"manual run: empty input string", `{"Data":{"timer":"\"\""}}`, TimerInfo{}, []string{"Data.timer holds no TimerInfo"}},
		{"manual run: null", `{"Data":{"timer":null}}`, TimerInfo{}, []string{"Data.timer holds no TimerInfo"}},
		{"a number is not a TimerInfo", `{"Data":{"timer":7}}`, TimerInfo{}, []string{"Data.timer holds no TimerInfo"}},
		{"unrecognised date",
			`{"Data":{"timer":{"ScheduleStatus":{"Last":"soon","Next":"2026-11-25T23:30:00Z","LastUpdated":12}}}}`,
			TimerInfo{ScheduleStatus: &ScheduleStatus{Next: last}},
			[]string{`ScheduleStatus.Last is not a recognised time: "soon"`, "ScheduleStatus.LastUpdated is not a recognised time: 12"}},
		{"date beyond .NET's range", withDates("9999-12-31T23:00:00-05:00"), TimerInfo{ScheduleStatus: status(time.Time{})},
			[]string{"Last is not", "Next is not", "LastUpdated is not"}},
		{"wrong shapes",
			`{"Data":{"timer":{"Schedule":[],"ScheduleStatus":"x","IsPastDue":1}},"Metadata":{"sys":{"MethodName":5,"UtcNow":"later"}}}`,
			TimerInfo{},
			[]string{"sys.MethodName is not a string", "sys.UtcNow is not a recognised time", "Schedule is not an object", "ScheduleStatus is not an object", "IsPastDue is not a boolean"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, inv, err := DecodeTimer(strings.NewReader(tt.body), "timer")
			if err != nil {
				t.Fatalf("DecodeTimer: %v", err)
			}
			if !equalTimer(got, tt.want) {
				t.Errorf("TimerInfo = %+v (status %+v), want %+v (status %+v)", got, got.ScheduleStatus, tt.want, tt.want.ScheduleStatus)
			}
			if len(inv.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %d like %q", inv.Warnings, len(tt.warnings), tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(inv.Warnings[i], w) || !strings.HasPrefix(inv.Warnings[i], "funchost: ") {
					t.Errorf("warning %d = %q, want funchost: ...%s...", i, inv.Warnings[i], w)
				}
			}
		})
	}
}

func TestDecodeTimerRejectsTheEnvelope(t *testing.T) {
	valid := readGolden(t, "timer_request.json")
	exactlyMax := append(bytes.Clone(valid), bytes.Repeat([]byte(" "), MaxBodyBytes-len(valid))...)
	tests := []struct {
		name    string
		r       func() *bytes.Reader
		binding string
		tooBig  bool
	}{
		{"empty body", func() *bytes.Reader { return bytes.NewReader(nil) }, "timer", false},
		{"not JSON", func() *bytes.Reader { return bytes.NewReader([]byte("Data=timer")) }, "timer", false},
		{"truncated", func() *bytes.Reader { return bytes.NewReader(valid[:len(valid)-1]) }, "timer", false},
		{"an array", func() *bytes.Reader { return bytes.NewReader([]byte(`[{"Data":{}}]`)) }, "timer", false},
		{"null", func() *bytes.Reader { return bytes.NewReader([]byte(`null`)) }, "timer", false},
		{"Data not an object", func() *bytes.Reader { return bytes.NewReader([]byte(`{"Data":"timer"}`)) }, "timer", false},
		{"no Data", func() *bytes.Reader { return bytes.NewReader([]byte(`{"Metadata":{}}`)) }, "timer", false},
		{"another binding", func() *bytes.Reader { return bytes.NewReader(valid) }, "myTimer", false},
		{"over 64 KiB", func() *bytes.Reader { return bytes.NewReader(append(bytes.Clone(exactlyMax), ' ')) }, "timer", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecodeTimer(tt.r(), tt.binding)
			if !errors.Is(err, ErrInvalidInvocation) {
				t.Fatalf("error = %v, want ErrInvalidInvocation", err)
			}
			if got := errors.Is(err, ErrBodyTooLarge); got != tt.tooBig {
				t.Errorf("errors.Is(err, ErrBodyTooLarge) = %t, want %t", got, tt.tooBig)
			}
			if !strings.HasPrefix(err.Error(), "funchost: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
	t.Run("exactly 64 KiB is fine", func(t *testing.T) {
		if _, _, err := DecodeTimer(bytes.NewReader(exactlyMax), "timer"); err != nil {
			t.Errorf("DecodeTimer(%d bytes): %v", len(exactlyMax), err)
		}
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("connection reset")
		_, _, err := DecodeTimer(iotest.ErrReader(boom), "timer")
		if !errors.Is(err, ErrInvalidInvocation) || !errors.Is(err, boom) {
			t.Errorf("error = %v, want ErrInvalidInvocation wrapping %v", err, boom)
		}
	})
}

func TestParseHostTime(t *testing.T) {
	want := utc("2026-11-25T23:35:00.0061742Z")
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-11-25T23:35:00.0061742+00:00", want, true},
		{"2026-11-25T23:35:00.0061742Z", want, true},
		{"2026-11-25t23:35:00.0061742z", want, true},
		{" 2026-11-25T23:35:00.0061742 ", want, true},
		{"2026-11-25T23:35:00,0061742Z", want, true},
		{"2026-11-26T01:35:00.0061742+02:00", want, true},
		{"2026-11-25T23:35:00+00:00", utc("2026-11-25T23:35:00Z"), true},
		{"11/25/2026 23:35:00", utc("2026-11-25T23:35:00Z"), true},
		{"9999-12-31T23:59:59.9999999", utc("9999-12-31T23:59:59.9999999Z"), true},
		{"0001-01-01T00:00:00+01:00", time.Time{}, false}, // before year 1 in UTC
		{"2026-13-01T00:00:00Z", time.Time{}, false},
		{"2026-11-25", time.Time{}, false},
		{"", time.Time{}, false},
		{"/Date(1764113700000)/", time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseHostTime(tt.in)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("ParseHostTime(%q) = %s, %t; want %s, %t", tt.in, got, ok, tt.want, tt.ok)
		}
		if ok && got.Location() != time.UTC {
			t.Errorf("ParseHostTime(%q) in %s, want UTC", tt.in, got.Location())
		}
	}
}

func TestInvocationRequestKeepsRawValues(t *testing.T) {
	// Metadata other than sys is handed on untouched, for bindings this
	// package does not interpret.
	body := `{"Data":{"timer":{}},"Metadata":{"RetryContext":{"RetryCount":2,"MaxRetryCount":5}}}`
	_, inv, err := DecodeTimer(strings.NewReader(body), "timer")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"RetryContext": `{"RetryCount":2,"MaxRetryCount":5}`}
	got := map[string]string{}
	for k, v := range inv.Metadata {
		got[k] = string(v)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Metadata = %v, want %v", got, want)
	}
}
