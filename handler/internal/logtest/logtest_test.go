package logtest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and stops
// the calling goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatal runs f with a fatalRecorder and returns what it failed with ("" if
// it returned normally).
func fatal(t *testing.T, f func(testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func filled() *logtest.Buffer {
	b := &logtest.Buffer{}
	log := zerolog.New(b)
	log.Info().Str("event", "throttled").Str("serving", "last_good").Int("retry_after_s", 30).Send()
	log.Info().Str("event", "refreshed").Str("user_id", "42").Send()
	log.Warn().Str("event", "throttled").Str("serving", "none").Send()
	return b
}

func TestStringIsWhatWasWritten(t *testing.T) {
	var b logtest.Buffer
	_, _ = b.Write([]byte(`{"event":"a"}` + "\n"))
	_, _ = b.Write([]byte("not json\n"))
	if got, want := b.String(), "{\"event\":\"a\"}\nnot json\n"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestEventsFiltersByEventField(t *testing.T) {
	b := filled()
	got := b.Events("throttled")
	if len(got) != 2 || got[0]["serving"] != "last_good" || got[1]["serving"] != "none" {
		t.Fatalf("Events(throttled) = %v, want the two throttled lines in order", got)
	}
	if got := b.Events("connected"); len(got) != 0 {
		t.Fatalf("Events(connected) = %v, want none", got)
	}
	if got := b.StrictEvents(t, "throttled"); len(got) != 2 || got[1]["level"] != "warn" {
		t.Fatalf("StrictEvents(throttled) = %v, want the two throttled lines in order", got)
	}
	if got := b.Lines(t); len(got) != 3 {
		t.Fatalf("Lines = %v, want 3 lines", got)
	}
}

func TestEventsPassesOverNonJSON(t *testing.T) {
	b := filled()
	_, _ = b.Write([]byte("plain text from somewhere else\n"))
	log := zerolog.New(b)
	log.Info().Str("event", "throttled").Send()
	if got := b.Events("throttled"); len(got) != 3 {
		t.Fatalf("Events(throttled) = %v, want 3 lines around the non-JSON one", got)
	}
}

func TestStrictReadersFailOnNonJSON(t *testing.T) {
	b := filled()
	_, _ = b.Write([]byte("plain text\n"))
	for name, read := range map[string]func(testing.TB){
		"Lines":        func(tb testing.TB) { b.Lines(tb) },
		"StrictEvents": func(tb testing.TB) { b.StrictEvents(tb, "refreshed") },
	} {
		if msg := fatal(t, read); !strings.Contains(msg, `log line is not JSON: "plain text"`) {
			t.Errorf("%s with a non-JSON line failed with %q, want it to name the line", name, msg)
		}
	}
	if msg := fatal(t, func(tb testing.TB) { filled().Lines(tb) }); msg != "" {
		t.Errorf("Lines with only JSON lines failed: %s", msg)
	}
}

func TestHas(t *testing.T) {
	b := filled()
	for _, c := range []struct {
		name, key string
		value     any
		want      bool
	}{
		{"throttled", "serving", "last_good", true},
		{"throttled", "serving", "none", true},
		{"throttled", "retry_after_s", 30.0, true}, // JSON numbers are float64
		{"throttled", "retry_after_s", 30, false},
		{"throttled", "user_id", "42", false}, // another event's field
		{"refreshed", "user_id", "42", true},
		{"connected", "user_id", "42", false},
	} {
		if got := b.Has(c.name, c.key, c.value); got != c.want {
			t.Errorf("Has(%q, %q, %#v) = %v, want %v", c.name, c.key, c.value, got, c.want)
		}
	}
}

// TestConcurrentWriters is meant for -race: no line is lost or torn.
func TestConcurrentWriters(t *testing.T) {
	var b logtest.Buffer
	log := zerolog.New(&b)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				log.Info().Str("event", "tick").Int("writer", w).Int("i", i).Send()
				_ = b.Events("tick")
			}
		})
	}
	wg.Wait()
	if n := len(b.StrictEvents(t, "tick")); n != 400 {
		t.Fatalf("%d tick lines, want 400", n)
	}
}
