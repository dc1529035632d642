package secrets

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/kvtest"
)

const fakeVaultURL = "https://megdocs-test.vault.azure.net/"

// fakeVault is the shared Key Vault stand-in (kvtest) behind the SDK's own
// fake server (azsecrets/fake): secrets with versions, a current version per
// name, injectable failures, a call log and a gate that holds reads until
// released. Its methods keep the names these tests use.
type fakeVault struct {
	*kvtest.Vault

	mu      sync.Mutex
	gate    chan struct{} // when set, reads wait for it to close (holdReads)
	entered chan struct{} // signalled when a read reaches the gate
}

type failMode struct {
	status int
	code   string
	netErr error
}

func newFakeVault(t *testing.T) *fakeVault {
	f := &fakeVault{Vault: kvtest.New(t, "megdocs-test.vault.azure.net", "unused-in-process")}
	f.OnRead(f.wait)
	return f
}

// wait holds a read at the gate holdReads (keyvault_test.go) set, if any.
func (f *fakeVault) wait(ctx context.Context) error {
	f.mu.Lock()
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if gate == nil {
		return nil
	}
	if entered != nil {
		entered <- struct{}{}
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// put adds version of name and makes it current.
func (f *fakeVault) put(name, version, value string, expires *time.Time) {
	var exp time.Time
	if expires != nil {
		exp = *expires
	}
	f.Put(name, version, value, exp)
}

func (f *fakeVault) setFail(name string, m failMode) {
	f.Fail(name, kvtest.Failure{Status: m.status, Code: m.code, NetErr: m.netErr})
}

func (f *fakeVault) clearFail(name string) { f.Clear(name) }

func (f *fakeVault) callCount() int { return f.ReadCount("") }

func (f *fakeVault) values() []string { return f.Values() }

// callLog is every GetSecret, "name/version" as asked.
func (f *fakeVault) callLog() []string {
	_, reads := f.Seen()
	for i, r := range reads {
		reads[i] = strings.TrimPrefix(r, "/secrets/")
	}
	return reads
}
