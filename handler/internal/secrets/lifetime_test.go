package secrets

import (
	"context"
	"errors"
	"testing"
)

// Close cancels a shared read in flight (which outlives its caller), waits
// for it, does not record the cancellation as Key Vault's answer, and no
// read of Key Vault starts after it; the cache still answers.
func TestKeyVaultCloseCancelsAndWaitsForTheSharedRead(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(CMSAPIKey, ver1, "cms-key-one", nil)
	e.vault.put(EncryptionKey, ver1, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", nil)
	mustGet(t, e.kv, EncryptionKey)
	entered, release := e.vault.holdReads()
	defer release()

	caller, leave := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.kv.Get(caller, CMSAPIKey)
		errc <- err
	}()
	recv(t, entered, "the read to reach Key Vault")
	leave() // the caller hangs up: the read goes on
	recv(t, errc, "the caller to give up")

	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	if err := e.kv.Close(ctx); err != nil {
		t.Fatalf("Close = %v, want the read cancelled and waited for", err)
	}
	calls := e.vault.callCount()
	if _, err := e.kv.Get(context.Background(), CMSAPIKey); !errors.Is(err, errClosed) {
		t.Errorf("Get after Close = %v, want errClosed (and not a failure recorded for Key Vault)", err)
	}
	if n := e.vault.callCount(); n != calls {
		t.Errorf("a read of Key Vault started after Close (%d calls, had %d)", n, calls)
	}
	if s := mustGet(t, e.kv, EncryptionKey); s.Version != ver1 {
		t.Errorf("cached secret after Close = %s, want it served", s)
	}
}
