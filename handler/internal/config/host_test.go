package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTimeSpan(t *testing.T) {
	good := map[string]time.Duration{
		"00:10:00": 10 * time.Minute, "00:05:00": 5 * time.Minute, "01:30:00": 90 * time.Minute,
		"1.00:00:00": 24 * time.Hour, "00:00:30.5": 30*time.Second + 500*time.Millisecond, "00:10": 10 * time.Minute,
		" 00:04:30 ": 4*time.Minute + 30*time.Second,
	}
	for in, want := range good {
		d, unbounded, err := ParseTimeSpan(in)
		if err != nil || unbounded || d != want {
			t.Errorf("ParseTimeSpan(%q) = %v, %v, %v; want %v", in, d, unbounded, err, want)
		}
	}
	if d, unbounded, err := ParseTimeSpan("-1"); err != nil || !unbounded || d != 0 {
		t.Errorf(`ParseTimeSpan("-1") = %v, %v, %v; want unbounded`, d, unbounded, err)
	}
	for _, in := range []string{"", "10m", "600", "00:60:00", "24:00:00", "00:00:00", "00:00:60", "abc", "00:1e1:00", "-00:10:00", "00:10:00:00", "x.00:10:00", "00:00:-1"} {
		if _, _, err := ParseTimeSpan(in); err == nil {
			t.Errorf("ParseTimeSpan(%q) succeeded", in)
		}
	}
}

func writeHost(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, HostFileName)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadHost(t *testing.T) {
	missing := filepath.Join(t.TempDir(), HostFileName)
	h := ReadHost(missing)
	if h.Err != nil || h.FunctionTimeout != DefaultFunctionTimeout || h.Unbounded || !strings.Contains(h.Source, "no host.json") {
		t.Errorf("no file: %+v, want the default with a source saying so", h)
	}

	first := writeHost(t, t.TempDir(), `{"version":"2.0","functionTimeout":"00:30:00"}`)
	second := writeHost(t, t.TempDir(), `{"version":"2.0","functionTimeout":"00:10:00"}`)
	if h := ReadHost(missing, first, second); h.Err != nil || h.FunctionTimeout != 30*time.Minute || h.Source != first {
		t.Errorf("first found: %+v, want 30m from %s", h, first)
	}

	if h := ReadHost(writeHost(t, t.TempDir(), `{"version":"2.0"}`)); h.Err != nil || h.FunctionTimeout != DefaultFunctionTimeout || !strings.Contains(h.Source, "no functionTimeout") {
		t.Errorf("no functionTimeout: %+v, want the default with a source saying so", h)
	}
	if h := ReadHost(missing); h.MaxDequeueCount != DefaultMaxDequeueCount {
		t.Errorf("no file: maxDequeueCount %d, want the default %d", h.MaxDequeueCount, DefaultMaxDequeueCount)
	}
	if h := ReadHost(writeHost(t, t.TempDir(), `{"extensions":{"queues":{"maxDequeueCount":7}}}`)); h.MaxDequeueCount != 7 {
		t.Errorf("maxDequeueCount 7: got %d", h.MaxDequeueCount)
	}
	if h := ReadHost(writeHost(t, t.TempDir(), `{"functionTimeout":"-1"}`)); h.Err != nil || !h.Unbounded {
		t.Errorf("-1: %+v, want unbounded", h)
	}
	for _, body := range []string{`{"functionTimeout":"10 minutes"}`, `{"functionTimeout":600}`, `{"version":`} {
		p := writeHost(t, t.TempDir(), body)
		if h := ReadHost(p); h.Err == nil || h.FunctionTimeout != DefaultFunctionTimeout || h.Source != p {
			t.Errorf("%s: %+v, want an error naming the file", body, h)
		}
	}
}

func TestRefreshDeadlineLeavesAMinuteOfFunctionTimeout(t *testing.T) {
	tests := []struct {
		name     string
		deadline string
		host     Host
		ok       bool
	}{
		{"defaults: 4m in the Consumption default 5m", "", Host{FunctionTimeout: 5 * time.Minute}, true},
		{"4m in 4m30s", "", Host{FunctionTimeout: 4*time.Minute + 30*time.Second, Source: "/pkg/host.json"}, false},
		{"9m in 10m", "9m", Host{FunctionTimeout: 10 * time.Minute}, true},
		{"9m1s in 10m", "9m1s", Host{FunctionTimeout: 10 * time.Minute, Source: "/pkg/host.json"}, false},
		{"25m in Flex's 30m", "25m", Host{FunctionTimeout: 30 * time.Minute}, true},
		{"anything when unbounded", "2h", Host{Unbounded: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			if tt.deadline != "" {
				m["REFRESH_DEADLINE"] = tt.deadline
			}
			c := LoadWithHost(env(m), tt.host)
			got := c.Missing(AreaRefresh)
			if tt.ok {
				if len(got) != 0 {
					t.Fatalf("problems %v", got)
				}
				return
			}
			if len(got) != 1 || got[0].Setting != "REFRESH_DEADLINE" {
				t.Fatalf("problems %v, want one on REFRESH_DEADLINE", got)
			}
			msg := got[0].Reason
			for _, want := range []string{c.RefreshDeadline.String(), tt.host.FunctionTimeout.String(), "functionTimeout", tt.host.Source} {
				if !strings.Contains(msg, want) {
					t.Errorf("problem %q does not name %q", msg, want)
				}
			}
			if len(c.Missing(AreaMicrosoft, AreaStorage, AreaReturnURLs)) != 0 {
				t.Errorf("a deadline problem blocked other areas: %v", c.Problems)
			}
		})
	}
	t.Run("a broken host.json is a problem", func(t *testing.T) {
		p := writeHost(t, t.TempDir(), `{"functionTimeout":"soon"}`)
		got := LoadWithHost(env(valid()), ReadHost(p)).Missing(AreaRefresh)
		if len(got) != 1 || got[0].Setting != HostFileName || !strings.Contains(got[0].Reason, p) {
			t.Errorf("problems %v, want one on host.json naming %s", got, p)
		}
	})
}

func TestWriteTimeout(t *testing.T) {
	m := valid()
	m["REFRESH_DEADLINE"] = "3m"
	if got := LoadWithHost(env(m), Host{FunctionTimeout: 10 * time.Minute}).WriteTimeout(); got != 11*time.Minute {
		t.Errorf("bounded: %v, want functionTimeout + 1m = 11m", got)
	}
	if got := LoadWithHost(env(m), Host{Unbounded: true}).WriteTimeout(); got != 5*time.Minute {
		t.Errorf("unbounded: %v, want REFRESH_DEADLINE + 2m = 5m", got)
	}
}

// The repository's host.json (what make package ships) and the default
// REFRESH_DEADLINE agree.
func TestShippedHostJSON(t *testing.T) {
	p := filepath.Join("..", "..", "..", HostFileName)
	h := ReadHost(p)
	if h.Err != nil || h.Source != p || h.Unbounded || h.FunctionTimeout != 10*time.Minute || h.MaxDequeueCount != 10 {
		t.Fatalf("ReadHost(%s) = %+v, want 10m and maxDequeueCount 10", p, h)
	}
	if c := LoadWithHost(env(valid()), h); c.Err() != nil {
		t.Errorf("defaults against the shipped host.json: %v", c.Err())
	}
}
