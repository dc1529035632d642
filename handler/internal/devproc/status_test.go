package devproc

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A trimmed /proc/<pid>/status as Linux writes it: tabs after the colon,
// "kB" after the number, fields whose names share a prefix.
const sampleStatus = "Name:\tbench\nState:\tS (sleeping)\nVmPeak:\t 1262384 kB\nVmHWM:\t   20312 kB\nVmRSS:\t   19876 kB\nRssAnon:\t    9944 kB\nThreads:\t8\n"

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStatusKiB(t *testing.T) {
	path := writeFile(t, sampleStatus)
	for field, want := range map[string]int64{"VmHWM": 20312, "VmRSS": 19876, "VmPeak": 1262384, "Threads": 8} {
		got, err := StatusKiB(path, field)
		if err != nil || got != want {
			t.Errorf("StatusKiB(%s) = %d, %v; want %d", field, got, err, want)
		}
	}
}

func TestStatusKiBMeminfo(t *testing.T) {
	path := writeFile(t, "MemTotal:       24641612 kB\nMemFree:         1032168 kB\n")
	if got, err := StatusKiB(path, "MemTotal"); err != nil || got != 24641612 {
		t.Fatalf("MemTotal = %d, %v", got, err)
	}
}

func TestStatusKiBErrors(t *testing.T) {
	path := writeFile(t, sampleStatus+"VmBad:\tmany kB\nVmEmpty:\n")
	for _, field := range []string{"VmSwap", "Vm", "VmHWM ", "VmBad", "VmEmpty", ""} {
		if got, err := StatusKiB(path, field); err == nil {
			t.Errorf("StatusKiB(%q) = %d, want an error", field, got)
		}
	}
	_, err := StatusKiB(path, "VmSwap")
	if err == nil || !strings.Contains(err.Error(), "no VmSwap") {
		t.Errorf("missing field: %v", err)
	}
	if _, err := StatusKiB(filepath.Join(t.TempDir(), "gone"), "VmHWM"); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestStatusKiBSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no /proc")
	}
	hwm, err := StatusKiB(SelfStatus, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	rss, err := StatusKiB(SelfStatus, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	// Read one after the other, so the RSS may have grown past the first
	// read's peak.
	if hwm <= 0 || rss <= 0 {
		t.Fatalf("VmHWM %d kB, VmRSS %d kB: want both positive", hwm, rss)
	}
}

func TestLoadAvg(t *testing.T) {
	if got := loadAvgOf(writeFile(t, "2.13 2.08 3.77 3/812 91234\n")); got != "2.13 2.08 3.77" {
		t.Errorf("loadavg = %q", got)
	}
	if got := loadAvgOf(writeFile(t, "2.13 2.08\n")); got != "unknown" {
		t.Errorf("short loadavg = %q", got)
	}
	if got := loadAvgOf(filepath.Join(t.TempDir(), "gone")); got != "unknown" {
		t.Errorf("missing loadavg = %q", got)
	}
	if runtime.GOOS == "linux" {
		if got := LoadAvg(); len(strings.Fields(got)) != 3 {
			t.Errorf("LoadAvg() = %q", got)
		}
	}
}
