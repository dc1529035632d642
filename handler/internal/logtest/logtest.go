// Package logtest collects zerolog's JSON lines for tests and finds lines by
// their "event" field.
//
// Test support only: it is imported by _test.go files and the product never
// imports it.
package logtest

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// Buffer is an io.Writer for a zerolog logger that keeps every line written.
// It is safe for concurrent writers and readers; the zero value is ready to
// use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p (zerolog writes one JSON line per call).
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns every non-empty line, decoded. A line that is not JSON
// fails t at once.
func (b *Buffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// StrictEvents returns the lines whose "event" field is name, like Events,
// but a line that is not JSON fails t at once (see Lines).
func (b *Buffer) StrictEvents(t testing.TB, name string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range b.Lines(t) {
		if m["event"] == name {
			out = append(out, m)
		}
	}
	return out
}

// Events returns the lines whose "event" field is name. Lines that are not
// JSON are passed over; use StrictEvents where every line must be JSON.
func (b *Buffer) Events(name string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == name {
			out = append(out, m)
		}
	}
	return out
}

// Has reports whether a line of Events(name) has value at key. Values are
// compared as encoding/json decodes them: numbers are float64.
func (b *Buffer) Has(name, key string, value any) bool {
	for _, e := range b.Events(name) {
		if e[key] == value {
			return true
		}
	}
	return false
}
