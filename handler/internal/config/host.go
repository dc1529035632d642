package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// HostFileName is the Functions host's configuration file. It ships at the
// package root beside the handler binary (make package), and the host
// starts the handler in the function app's root (customHandler.description
// workingDirectory "" in host.json), so both places hold the same file.
const HostFileName = "host.json"

// DefaultFunctionTimeout applies when host.json or its functionTimeout is
// absent: the host's own default on the Consumption plan, the smallest of
// any plan (Flex Consumption: 30 minutes). Source: Microsoft's "Function
// app timeout duration" table (facts/azure-functions.md, Timeouts).
const DefaultFunctionTimeout = 5 * time.Minute

// Host is what the handler takes from host.json.
type Host struct {
	// FunctionTimeout is functionTimeout; 0 with Unbounded means "-1"
	// (no limit: Flex Consumption, Premium, Dedicated).
	FunctionTimeout time.Duration
	Unbounded       bool
	// MaxDequeueCount is extensions.queues.maxDequeueCount: how many
	// failed receives of a queue message the host allows before it moves
	// the message to "<queue>-poison" (default 5; facts/azure-functions.md,
	// "Queue trigger for a custom handler").
	MaxDequeueCount int64
	// Source says where the value came from, for the start-up log and
	// configuration problems: a file path, or why the default applies.
	Source string
	// Err is a host.json that exists but cannot be read or parsed, or a
	// functionTimeout that is not a time span; FunctionTimeout is then the
	// default.
	Err error
}

// HostFiles are the places ReadHost looks for host.json, first found wins:
// beside the running binary (the package root), then the working
// directory (what the host sets; `make run` runs from the repository root).
func HostFiles() []string {
	var out []string
	if exe, err := os.Executable(); err == nil {
		out = append(out, filepath.Join(filepath.Dir(exe), HostFileName))
	}
	return append(out, HostFileName)
}

// ReadHost reads functionTimeout from the first of paths that exists. No
// file at all is not an error (tests, a local run without the host): the
// default applies and Source says so.
func ReadHost(paths ...string) Host {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return Host{FunctionTimeout: DefaultFunctionTimeout, MaxDequeueCount: DefaultMaxDequeueCount, Source: p, Err: err}
		}
		return parseHost(p, b)
	}
	return Host{FunctionTimeout: DefaultFunctionTimeout, MaxDequeueCount: DefaultMaxDequeueCount,
		Source: fmt.Sprintf("no %s beside the handler or in the working directory: the host's Consumption default", HostFileName)}
}

func parseHost(path string, b []byte) Host {
	var f struct {
		FunctionTimeout *string `json:"functionTimeout"`
		Extensions      struct {
			Queues struct {
				MaxDequeueCount *int64 `json:"maxDequeueCount"`
			} `json:"queues"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return Host{FunctionTimeout: DefaultFunctionTimeout, MaxDequeueCount: DefaultMaxDequeueCount, Source: path, Err: fmt.Errorf("not JSON: %w", err)}
	}
	dequeue := int64(DefaultMaxDequeueCount)
	if n := f.Extensions.Queues.MaxDequeueCount; n != nil && *n > 0 {
		dequeue = *n
	}
	if f.FunctionTimeout == nil {
		return Host{FunctionTimeout: DefaultFunctionTimeout, MaxDequeueCount: dequeue, Source: path + " (no functionTimeout: the host's Consumption default)"}
	}
	d, unbounded, err := ParseTimeSpan(*f.FunctionTimeout)
	if err != nil {
		return Host{FunctionTimeout: DefaultFunctionTimeout, MaxDequeueCount: dequeue, Source: path, Err: fmt.Errorf("functionTimeout: %w", err)}
	}
	return Host{FunctionTimeout: d, Unbounded: unbounded, MaxDequeueCount: dequeue, Source: path}
}

// DefaultMaxDequeueCount is the queue extension's default maxDequeueCount.
const DefaultMaxDequeueCount = 5

// ParseTimeSpan reads a .NET TimeSpan as host.json writes functionTimeout:
// "[d.]hh:mm[:ss[.fffffff]]", or "-1" for no limit (unbounded true).
func ParseTimeSpan(s string) (d time.Duration, unbounded bool, err error) {
	s = strings.TrimSpace(s)
	if s == "-1" {
		return 0, true, nil
	}
	bad := fmt.Errorf("%q is not a time span like 00:10:00", s)
	days := 0
	if dot, colon := strings.IndexByte(s, '.'), strings.IndexByte(s, ':'); dot >= 0 && colon >= 0 && dot < colon {
		if days, err = strconv.Atoi(s[:dot]); err != nil || !digits(s[:dot]) {
			return 0, false, bad
		}
		s = s[dot+1:]
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || !digits(parts[0]) || !digits(parts[1]) {
		return 0, false, bad
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || h < 0 || h > 23 || m < 0 || m > 59 {
		return 0, false, bad
	}
	var sec float64
	if len(parts) == 3 {
		v, err := strconv.ParseFloat(parts[2], 64)
		if err != nil || v >= 60 || !digits(strings.Replace(parts[2], ".", "", 1)) {
			return 0, false, bad
		}
		sec = v
	}
	d = time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec*float64(time.Second))
	if d <= 0 {
		return 0, false, bad
	}
	return d, false, nil
}

// digits reports whether s is one or more ASCII digits (no sign).
func digits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// hostTimeoutGrace is how long after functionTimeout the host still waits
// for the handler's answer to an invocation: its HTTP call to the worker
// times out at functionTimeout + 1 minute (facts/azure-functions.md, "What
// the host does to a forwarded request").
const hostTimeoutGrace = time.Minute

// deadlineMargin is what REFRESH_DEADLINE must leave of functionTimeout: the
// sweep stops starting refreshes at the deadline, and the ones in flight
// (each bounded by the HTTP client's timeout) and the summary write must end
// before the host cancels the invocation (contract: REFRESH_DEADLINE).
const deadlineMargin = time.Minute

// WriteTimeout is the handler's HTTP write timeout. Bounded by
// functionTimeout: the host stops waiting for the timer's answer at
// functionTimeout + 1 minute, so writing longer is pointless, and cutting
// earlier would fail a sweep the host still waits for. Unbounded: the
// sweep's own bound, REFRESH_DEADLINE plus two minutes for refreshes in
// flight.
func (c Config) WriteTimeout() time.Duration {
	if c.Host.Unbounded {
		return c.RefreshDeadline + 2*time.Minute
	}
	return c.Host.FunctionTimeout + hostTimeoutGrace
}

// validateHost checks host.json and REFRESH_DEADLINE against it.
func (l *loader) validateHost(c *Config) {
	if c.Host.Err != nil {
		l.problem(HostFileName, AreaRefresh, fmt.Sprintf("%s: %v", c.Host.Source, c.Host.Err))
		return
	}
	if c.Host.Unbounded {
		return
	}
	if c.RefreshDeadline+deadlineMargin > c.Host.FunctionTimeout {
		l.problem("REFRESH_DEADLINE", AreaRefresh, fmt.Sprintf(
			"%s leaves less than a minute of host.json's functionTimeout %s (%s): set REFRESH_DEADLINE to %s or less, or raise functionTimeout",
			c.RefreshDeadline, c.Host.FunctionTimeout, c.Host.Source, c.Host.FunctionTimeout-deadlineMargin))
	}
}
