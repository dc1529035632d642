package devproc

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SelfStatus is this process's status file: VmHWM, VmRSS and the like.
const SelfStatus = "/proc/self/status"

// StatusKiB reads the number of one "Name:   123 kB" line of a /proc file:
// /proc/<pid>/status (VmHWM, VmRSS) or /proc/meminfo (MemTotal).
func StatusKiB(path, field string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, rest, ok := strings.Cut(line, ":"); ok && name == field {
			if f := strings.Fields(rest); len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// LoadAvg is /proc/loadavg's first three numbers ("2.13 2.08 3.77"), or
// "unknown".
func LoadAvg() string { return loadAvgOf("/proc/loadavg") }

func loadAvgOf(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
