package secrets

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// newClock is a settable clock for TTL and backoff tests.
func newClock() *clocktest.Clock {
	return clocktest.New(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
}

// logBuffer collects zerolog's JSON lines (logtest.Buffer: safe for
// concurrent writers; StrictEvents fails on a line that is not JSON).
type logBuffer struct{ logtest.Buffer }

func (b *logBuffer) logger() zerolog.Logger { return zerolog.New(b).With().Timestamp().Logger() }

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
