package secrets

import (
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/kvtest"
)

const fakeVaultURL = "https://megdocs-test.vault.azure.net/"

// fakeVault is the shared Key Vault stand-in (kvtest) behind the SDK's own
// fake server (azsecrets/fake): secrets with versions, a current version per
// name, injectable failures, a call log and a gate that holds reads until
// released. Its methods keep the names these tests use.
type fakeVault struct{ *kvtest.Vault }

type failMode struct {
	status int
	code   string
	netErr error
}

func newFakeVault(t *testing.T) *fakeVault {
	return &fakeVault{kvtest.New(t, "megdocs-test.vault.azure.net", "unused-in-process")}
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

// holdReads makes every read wait until the returned release is called; a
// read reaching the gate signals the returned channel.
func (f *fakeVault) holdReads() (entered <-chan struct{}, release func()) { return f.Hold() }
