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

// shared is the test binary's emulator under RunTests.
var shared struct {
	mu      sync.Mutex
	managed bool // RunTests will stop the emulator after the last test
	emu     *Emulator
	err     error // a failed start is not retried: every test would wait for it again
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
	if shared.emu != nil {
		if err := shared.emu.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
		shared.emu = nil
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
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: skipping a test that needs the Azurite Table emulator", SkipEnv)
	}
	shared.mu.Lock()
	if !shared.managed {
		shared.mu.Unlock()
		e, err := Start(context.Background(), Options{})
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
	if shared.emu == nil && shared.err == nil {
		shared.emu, shared.err = Start(context.Background(), Options{})
	}
	if shared.err != nil {
		t.Fatal(failure(shared.err))
	}
	return shared.emu.ConnectionString()
}

func failure(err error) string {
	return fmt.Sprintf("%v\nThis test needs the Azurite Table emulator: run `make deps` (npm ci in .devtools/npm) "+
		"or set %s to an azurite-table binary; %s=1 skips these tests explicitly.", err, BinEnv, SkipEnv)
}
