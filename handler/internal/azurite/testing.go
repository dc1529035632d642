package azurite

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
)

// SkipEnv names the one explicit opt-out: with SKIP_AZURITE=1, tests that
// need the emulator skip. Without it, a missing emulator fails them: a store
// test that silently skips proves nothing.
const SkipEnv = "SKIP_AZURITE"

// shared is the test binary's emulators under RunTests: the Table service
// and, started only when a test asks for it, the Queue service.
var shared struct {
	mu       sync.Mutex
	managed  bool // RunTests will stop the emulators after the last test
	emu      *Emulator
	err      error // a failed start is not retried: every test would wait for it again
	queue    *Emulator
	queueErr error
}

// RunTests runs a test binary's tests and then stops the emulator they
// shared, if any of them started one. Use it as the package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }
func RunTests(m *testing.M) int {
	shared.mu.Lock()
	shared.managed = true
	shared.mu.Unlock()

	code := m.Run()

	shared.mu.Lock()
	defer shared.mu.Unlock()
	for _, e := range []**Emulator{&shared.emu, &shared.queue} {
		if *e == nil {
			continue
		}
		if err := (*e).Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
		*e = nil
	}
	shared.managed = false
	return code
}

// ForTest returns a connection string to a running emulator. Under RunTests
// all tests of the binary share one emulator, started on first use (give each
// test its own tables); otherwise t gets its own, stopped when t ends.
//
// It fails t when the emulator cannot start (for example not installed:
// run `make deps`), and skips t only when SKIP_AZURITE=1.
func ForTest(t testing.TB) string {
	t.Helper()
	return forTest(t, Table)
}

// QueueForTest is ForTest for the Queue service: a connection string with
// a QueueEndpoint (AzureWebJobsStorage's form). Give each test its own
// queue names.
func QueueForTest(t testing.TB) string {
	t.Helper()
	return forTest(t, Queue)
}

func forTest(t testing.TB, service Service) string {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: skipping a test that needs the Azurite Table emulator", SkipEnv)
	}
	shared.mu.Lock()
	if !shared.managed {
		shared.mu.Unlock()
		e, err := Start(context.Background(), Options{Service: service})
		if err != nil {
			t.Fatal(failure(err))
		}
		t.Cleanup(func() {
			if err := e.Stop(); err != nil {
				t.Error(err)
			}
		})
		return e.ConnectionString()
	}
	defer shared.mu.Unlock()
	emu, errp := &shared.emu, &shared.err
	if service == Queue {
		emu, errp = &shared.queue, &shared.queueErr
	}
	if *emu == nil && *errp == nil {
		*emu, *errp = Start(context.Background(), Options{Service: service})
	}
	if *errp != nil {
		t.Fatal(failure(*errp))
	}
	return (*emu).ConnectionString()
}

func failure(err error) string {
	return fmt.Sprintf("%v\nThis test needs the Azurite emulator: run `make deps` (npm ci in .devtools/npm) "+
		"or set %s to an azurite-table binary; %s=1 skips these tests explicitly.", err, BinEnv, SkipEnv)
}
