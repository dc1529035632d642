package secrets

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// clock is a settable clock for TTL and backoff tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects zerolog's JSON lines; safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() zerolog.Logger { return zerolog.New(b).With().Timestamp().Logger() }

// lines returns every logged line, decoded.
func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// events returns the lines whose "event" field is event.
func (b *logBuffer) events(t *testing.T, event string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range b.lines(t) {
		if l["event"] == event {
			out = append(out, l)
		}
	}
	return out
}

// assertNoValues fails if any of values appears anywhere in the log.
func (b *logBuffer) assertNoValues(t *testing.T, values ...string) {
	t.Helper()
	out := b.String()
	for _, v := range values {
		if v != "" && strings.Contains(out, v) {
			t.Errorf("the log contains a secret value (%d bytes)", len(v))
		}
	}
}

// field returns line[key] as a string ("" when absent).
func field(line map[string]any, key string) string {
	s, _ := line[key].(string)
	return s
}

// stubSource is an in-memory Source for the keyring and expiry tests.
type stubSource struct {
	mu       sync.Mutex
	current  map[string]Secret
	versions map[string]Secret // name + "/" + version
	gets     int
}

func newStubSource() *stubSource {
	return &stubSource{current: map[string]Secret{}, versions: map[string]Secret{}}
}

// set makes s the current version of its name (and a named version).
func (s *stubSource) set(sec Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current[sec.Name] = sec
	s.versions[sec.Name+"/"+sec.Version] = sec
}

func (s *stubSource) Get(_ context.Context, name string) (Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets++
	sec, ok := s.current[name]
	if !ok {
		return Secret{}, &NotConfiguredError{Name: name, Reason: "not in the stub"}
	}
	return sec, nil
}

func (s *stubSource) GetVersion(_ context.Context, name, version string) (Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.versions[name+"/"+version]
	if !ok {
		return Secret{}, &NotConfiguredError{Name: name, Reason: "version not in the stub"}
	}
	return sec, nil
}

func (s *stubSource) Reload(ctx context.Context, name string) (Secret, error) {
	return s.Get(ctx, name)
}
