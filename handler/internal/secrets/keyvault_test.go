package secrets

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
)

type fakeEnv struct {
	vault *fakeVault
	kv    *KeyVault
	clock *clocktest.Clock
	logs  *logBuffer
	cred  *azfake.TokenCredential
}

// newFakeEnv builds a KeyVault over the SDK's fake server. The SDK's retries
// are off so failure cases answer at once; TTL 5m, backoff 10s, one warning
// a minute (the defaults, spelled out because tests depend on them).
func newFakeEnv(t *testing.T, tweaks ...func(*KeyVaultOptions)) *fakeEnv {
	t.Helper()
	e := &fakeEnv{vault: newFakeVault(t), clock: newClock(), logs: &logBuffer{}, cred: &azfake.TokenCredential{}}
	srv := e.vault.FakeServer()
	opts := KeyVaultOptions{
		TTL:            5 * time.Minute,
		FailureBackoff: 10 * time.Second,
		WarnEvery:      time.Minute,
		Now:            e.clock.Now,
		Transport:      fake.NewServerTransport(srv),
		Retry:          policy.RetryOptions{MaxRetries: -1},
		Logger:         e.logs.logger(),
	}
	for _, tweak := range tweaks {
		tweak(&opts)
	}
	kv, err := NewKeyVault(fakeVaultURL, e.cred, opts)
	if err != nil {
		t.Fatalf("NewKeyVault: %v", err)
	}
	e.kv = kv
	t.Cleanup(func() { e.logs.assertNoValues(t, e.vault.values()...) })
	return e
}

func mustGet(t *testing.T, src Source, name string) Secret {
	t.Helper()
	s, err := src.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return s
}

const (
	ver1 = "11111111111111111111111111111111"
	ver2 = "22222222222222222222222222222222"
)

func TestKeyVaultStartIsLazy(t *testing.T) {
	e := newFakeEnv(t)
	if n := e.vault.callCount(); n != 0 {
		t.Errorf("NewKeyVault made %d Key Vault calls, want 0", n)
	}
}

func TestKeyVaultCachesForTTL(t *testing.T) {
	e := newFakeEnv(t)
	exp := time.Date(2027, 5, 1, 0, 0, 0, 0, time.UTC)
	e.vault.put(ClientSecret, ver1, "client-secret-one", &exp)

	s := mustGet(t, e.kv, ClientSecret)
	if s.Name != ClientSecret || s.Value != "client-secret-one" || s.Version != ver1 || !s.Expires.Equal(exp) {
		t.Errorf("Get = %s (value ok %t), want version %s expiring %s", s, s.Value == "client-secret-one", ver1, exp)
	}
	for range 50 {
		mustGet(t, e.kv, ClientSecret)
	}
	e.clock.Advance(5*time.Minute - time.Second)
	mustGet(t, e.kv, ClientSecret)
	if n := e.vault.callCount(); n != 1 {
		t.Errorf("%d Key Vault calls within the TTL, want 1", n)
	}
}

func TestKeyVaultPicksUpRotationAfterTTL(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(ClientSecret, ver1, "client-secret-one", nil)
	mustGet(t, e.kv, ClientSecret)

	e.vault.put(ClientSecret, ver2, "client-secret-two", nil) // rotated in Key Vault
	e.clock.Advance(5*time.Minute - time.Second)
	if s := mustGet(t, e.kv, ClientSecret); s.Version != ver1 {
		t.Errorf("before the TTL: version %s, want the cached %s", s.Version, ver1)
	}
	e.clock.Advance(time.Second)
	s := mustGet(t, e.kv, ClientSecret)
	if s.Version != ver2 || s.Value != "client-secret-two" {
		t.Errorf("after the TTL: %s, want version %s", s, ver2)
	}
	if n := e.vault.callCount(); n != 2 {
		t.Errorf("%d Key Vault calls, want 2", n)
	}
}

func TestKeyVaultReloadBypassesCache(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(ClientSecret, ver1, "client-secret-one", nil)
	mustGet(t, e.kv, ClientSecret)
	e.vault.put(ClientSecret, ver2, "client-secret-two", nil)

	if s := mustGet(t, e.kv, ClientSecret); s.Version != ver1 {
		t.Fatalf("Get = %s, want the cached version", s)
	}
	s, err := e.kv.Reload(context.Background(), ClientSecret)
	if err != nil || s.Version != ver2 || s.Value != "client-secret-two" {
		t.Fatalf("Reload = %s, %v; want version %s", s, err, ver2)
	}
	// The reloaded value is now the cached one, for a full TTL.
	e.clock.Advance(4 * time.Minute)
	if s := mustGet(t, e.kv, ClientSecret); s.Version != ver2 {
		t.Errorf("Get after Reload = %s, want version %s", s, ver2)
	}
	if n := e.vault.callCount(); n != 2 {
		t.Errorf("%d Key Vault calls, want 2", n)
	}
}

// holdReads makes every read wait until the returned release is called; a
// read reaching the gate signals the returned channel.
func (f *fakeVault) holdReads() (entered <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gate := make(chan struct{})
	ch := make(chan struct{}, 100)
	f.gate, f.entered = gate, ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			f.gate, f.entered = nil, nil
			f.mu.Unlock()
			close(gate)
		})
	}
}

// waitBound bounds every wait on an event in these tests: a missing event
// fails the test instead of hanging it until go test's 10-minute timeout.
const waitBound = 10 * time.Second

// recv waits for one value on ch, failing t after waitBound.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitBound):
		t.Fatalf("waited %s for %s", waitBound, what)
		panic("unreachable")
	}
}

// waitGroupDone is closed when wg's count reaches zero.
func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// waitParked waits until n goroutines are blocked (in a select or on a
// channel) with every one of frames on their stacks ("pkg.(*T).m(": the
// call itself, not a closure in it; "pkg.TestX.": this test's
// goroutines), failing t after waitBound. It reads the goroutines' stacks,
// the one record of where each is waiting.
func waitParked(t *testing.T, n int, frames ...string) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	buf := make([]byte, 1<<20)
	for {
		got := 0
		for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			blocked := strings.Contains(header, "[select") || strings.Contains(header, "[chan receive")
			for _, f := range frames {
				blocked = blocked && strings.Contains(g, f)
			}
			if blocked {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %d goroutines blocked in %q, found %d", waitBound, n, frames, got)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestKeyVaultConcurrentReadersShareOneFetch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		warm   bool // a value is cached (and still fresh) before the burst
		read   func(*KeyVault, context.Context) (Secret, error)
		calls  int
		stated string
	}{
		{"Get on a cold cache", false, func(k *KeyVault, ctx context.Context) (Secret, error) { return k.Get(ctx, CMSAPIKey) }, 1, "one read for the burst"},
		{"Reload with a fresh cache", true, func(k *KeyVault, ctx context.Context) (Secret, error) { return k.Reload(ctx, CMSAPIKey) }, 2, "the warm-up read plus one shared reload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeEnv(t)
			e.vault.put(CMSAPIKey, ver1, "cms-key-one", nil)
			if tc.warm {
				mustGet(t, e.kv, CMSAPIKey)
				e.vault.put(CMSAPIKey, ver2, "cms-key-two", nil)
			}
			entered, release := e.vault.holdReads()
			defer release()

			const readers = 25
			var started, done sync.WaitGroup
			results := make(chan Secret, readers)
			errs := make(chan error, readers)
			for range readers {
				started.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					started.Done()
					s, err := tc.read(e.kv, context.Background())
					results <- s
					errs <- err
				}()
			}
			started.Wait()
			recv(t, entered, "a read to reach Key Vault")
			// Every reader must be waiting in the shared read before it
			// is released: one that arrives later would find the value
			// cached (Get) or start a read of its own (Reload), and the
			// count below would prove nothing, or fail at random.
			waitParked(t, readers, "secrets.(*flight).do(", "secrets.TestKeyVaultConcurrentReadersShareOneFetch.")
			release()
			recv(t, waitGroupDone(&done), "every reader to return")
			close(results)
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
			}
			wantVersion := ver1
			if tc.warm {
				wantVersion = ver2
			}
			for s := range results {
				if s.Version != wantVersion {
					t.Errorf("a reader got version %s, want %s", s.Version, wantVersion)
				}
			}
			if n := e.vault.callCount(); n != tc.calls {
				t.Errorf("%d Key Vault calls, want %d (%s)", n, tc.calls, tc.stated)
			}
		})
	}
}

func TestKeyVaultCallerCancelDoesNotAbortTheRead(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(CMSAPIKey, ver1, "cms-key-one", nil)
	entered, release := e.vault.holdReads()
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.kv.Get(ctx, CMSAPIKey)
		errc <- err
	}()
	recv(t, entered, "the read to reach Key Vault")
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Get: err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled caller kept waiting on Key Vault")
	}
	release()

	// The read went on and was cached: the next caller needs no new call.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := e.kv.Get(context.Background(), CMSAPIKey)
		if err == nil && s.Version == ver1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get after release = %s, %v", s, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.vault.callCount(); n != 1 {
		t.Errorf("%d Key Vault calls, want 1", n)
	}
}

func TestKeyVaultSlowVaultServesLastGood(t *testing.T) {
	e := newFakeEnv(t, func(o *KeyVaultOptions) { o.StaleWait = 30 * time.Millisecond })
	e.vault.put(CMSAPIKey, ver1, "cms-key-one", nil)
	mustGet(t, e.kv, CMSAPIKey)
	e.vault.put(CMSAPIKey, ver2, "cms-key-two", nil)
	_, release := e.vault.holdReads()
	defer release()

	e.clock.Advance(5 * time.Minute)
	start := time.Now()
	s := mustGet(t, e.kv, CMSAPIKey)
	if s.Version != ver1 {
		t.Errorf("Get while Key Vault hangs = %s, want the last good version %s", s, ver1)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("Get waited %s for a hanging vault, want about StaleWait", waited)
	}

	// The read carries on in the background and lands in the cache.
	release()
	deadline := time.Now().Add(5 * time.Second)
	for mustGet(t, e.kv, CMSAPIKey).Version != ver2 {
		if time.Now().After(deadline) {
			t.Fatal("the background read never updated the cache")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.vault.callCount(); n != 2 {
		t.Errorf("%d Key Vault calls, want 2", n)
	}
}

// Regression: a secret Key Vault said is absent (the optional previous CMS
// key outside a rotation) has no last good value. While Key Vault hangs, Get
// must still answer its last known state after StaleWait instead of holding
// the request (every CMS request reads this key) for the whole FetchTimeout.
func TestKeyVaultSlowVaultDoesNotHoldAnAbsentSecret(t *testing.T) {
	e := newFakeEnv(t, func(o *KeyVaultOptions) {
		o.StaleWait = 30 * time.Millisecond
		o.FetchTimeout = time.Minute
	})
	if _, err := e.kv.Get(context.Background(), CMSAPIKeyPrevious); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("absent secret: err = %v, want ErrNotConfigured", err)
	}
	entered, release := e.vault.holdReads()
	defer release()
	e.clock.Advance(10 * time.Second) // past the failure backoff

	done := make(chan error, 1)
	go func() {
		_, err := e.kv.Get(context.Background(), CMSAPIKeyPrevious)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotConfigured) {
			t.Errorf("Get while Key Vault hangs: err = %v, want the last known ErrNotConfigured", err)
		}
	case <-time.After(10 * time.Second):
		release()
		t.Fatal("Get of an absent secret waited for a hanging Key Vault read instead of answering after StaleWait")
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Key Vault was not asked again after the backoff")
	}

	// The read carries on in the background: a secret created meanwhile
	// lands in the cache.
	e.vault.put(CMSAPIKeyPrevious, ver1, "cms-key-previous", nil)
	release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := e.kv.Get(context.Background(), CMSAPIKeyPrevious)
		if err == nil && s.Version == ver1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background read never updated the cache: %s, %v", s, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A secret deleted from Key Vault (404 after a good read) is no longer
// served: the last-good rule is for a vault that cannot be reached or
// refuses, and removing cms-api-key-previous must revoke that key.
func TestKeyVaultStopsServingADeletedSecret(t *testing.T) {
	for _, name := range []string{ClientSecret, CMSAPIKeyPrevious} {
		t.Run(name, func(t *testing.T) {
			e := newFakeEnv(t)
			e.vault.put(name, ver1, "value-one", nil)
			mustGet(t, e.kv, name)

			e.vault.setFail(name, failMode{status: http.StatusNotFound, code: "SecretNotFound"})
			e.clock.Advance(5 * time.Minute)
			if s, err := e.kv.Get(context.Background(), name); !errors.Is(err, ErrNotConfigured) {
				t.Fatalf("Get after deletion = %s, %v; want ErrNotConfigured", s, err)
			}
			lines := e.logs.StrictEvents(t, "secret_unavailable")
			if len(lines) != 1 || field(lines[0], "reason") != "not_found" || field(lines[0], "serving") != "" {
				t.Errorf("log lines = %v", lines)
			}
			if strings.Contains(e.logs.String(), "value-one") {
				t.Error("the deleted value was logged")
			}
			// Created again: served again once the backoff has passed.
			e.vault.clearFail(name)
			e.vault.put(name, ver2, "value-two", nil)
			e.clock.Advance(time.Minute)
			if s := mustGet(t, e.kv, name); s.Value != "value-two" {
				t.Errorf("Get after re-creation = %s", s)
			}
		})
	}
}

func TestKeyVaultServesLastGoodOnFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      failMode
		reason    string
		fixSubstr string
	}{
		{"forbidden", failMode{status: http.StatusForbidden, code: "Forbidden"}, "forbidden", `"Key Vault Secrets User"`},
		{"network", failMode{netErr: errors.New("dial tcp 10.0.0.4:443: connect: connection refused")}, "unreachable", "KEY_VAULT_URL"},
		{"server error", failMode{status: http.StatusServiceUnavailable, code: "ServiceUnavailable"}, "unavailable", "retried"},
		{"throttled", failMode{status: http.StatusTooManyRequests, code: "Throttled"}, "throttled", "SECRETS_CACHE_TTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeEnv(t)
			e.vault.put(ClientSecret, ver1, "client-secret-one", nil)
			mustGet(t, e.kv, ClientSecret)

			e.vault.setFail(ClientSecret, tc.mode)
			e.clock.Advance(5 * time.Minute) // TTL over: the next Get reads
			s := mustGet(t, e.kv, ClientSecret)
			if s.Version != ver1 || s.Value != "client-secret-one" {
				t.Fatalf("Get during failure = %s, want the last good value", s)
			}
			warns := e.logs.StrictEvents(t, "secret_unavailable")
			if len(warns) != 1 {
				t.Fatalf("%d secret_unavailable lines, want 1: %s", len(warns), e.logs)
			}
			w := warns[0]
			for k, want := range map[string]string{"level": "warn", "secret": ClientSecret, "vault": fakeVaultURL, "reason": tc.reason, "serving": "last_good", "last_good_version": ver1} {
				if got := field(w, k); got != want {
					t.Errorf("warning %s = %q, want %q", k, got, want)
				}
			}
			if !strings.Contains(field(w, "fix"), tc.fixSubstr) {
				t.Errorf("warning fix = %q, want it to contain %q", field(w, "fix"), tc.fixSubstr)
			}

			// Within the backoff: no new call. After it: a new call, but
			// no new warning until a minute has passed since the last.
			calls := e.vault.callCount()
			mustGet(t, e.kv, ClientSecret)
			if n := e.vault.callCount(); n != calls {
				t.Errorf("a read within the failure backoff called Key Vault (%d calls, want %d)", n, calls)
			}
			for range 4 {
				e.clock.Advance(10 * time.Second)
				if s := mustGet(t, e.kv, ClientSecret); s.Version != ver1 {
					t.Fatalf("Get = %s, want the last good value", s)
				}
			}
			if n := e.vault.callCount(); n != calls+4 {
				t.Errorf("%d calls after 4 backoff periods, want %d", n, calls+4)
			}
			if n := len(e.logs.StrictEvents(t, "secret_unavailable")); n != 1 {
				t.Errorf("%d warnings within a minute, want 1 (rate limited)", n)
			}
			e.clock.Advance(20 * time.Second) // a minute since the first warning
			mustGet(t, e.kv, ClientSecret)
			warns = e.logs.StrictEvents(t, "secret_unavailable")
			if len(warns) != 2 {
				t.Fatalf("%d warnings after a minute, want 2", len(warns))
			}
			if got := warns[1]["suppressed"]; got != float64(4) {
				t.Errorf("second warning suppressed = %v, want 4", got)
			}

			// Key Vault answers again: the new value, and a recovery line.
			e.vault.clearFail(ClientSecret)
			e.vault.put(ClientSecret, ver2, "client-secret-two", nil)
			e.clock.Advance(10 * time.Second)
			if s := mustGet(t, e.kv, ClientSecret); s.Version != ver2 {
				t.Errorf("after recovery Get = %s, want version %s", s, ver2)
			}
			if n := len(e.logs.StrictEvents(t, "secret_recovered")); n != 1 {
				t.Errorf("%d secret_recovered lines, want 1", n)
			}
		})
	}
}

func TestKeyVaultReloadDuringOutageServesLastGood(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(ClientSecret, ver1, "client-secret-one", nil)
	mustGet(t, e.kv, ClientSecret)
	e.vault.setFail(ClientSecret, failMode{status: http.StatusForbidden, code: "Forbidden"})
	s, err := e.kv.Reload(context.Background(), ClientSecret)
	if err != nil || s.Version != ver1 {
		t.Errorf("Reload during a 403 = %s, %v; want the last good value", s, err)
	}
	if n := e.vault.callCount(); n != 2 {
		t.Errorf("%d calls, want 2 (Reload must ask Key Vault)", n)
	}
}

func TestKeyVaultNeverReadIsNotConfigured(t *testing.T) {
	for _, tc := range []struct {
		name     string
		secret   string
		mode     *failMode
		credErr  error
		reason   string
		status   int
		contains []string
	}{
		{"missing", CMSAPIKey, nil, nil, "not_found", 404,
			[]string{fakeVaultURL, "cms-api-key", "az keyvault secret set --vault-name megdocs-test --name cms-api-key --value"}},
		{"missing encryption key", EncryptionKey, nil, nil, "not_found", 404,
			[]string{"--name token-encryption-key", "openssl rand -base64 32"}},
		{"forbidden", CMSAPIKey, &failMode{status: 403, code: "Forbidden"}, nil, "forbidden", 403,
			[]string{fakeVaultURL, "cms-api-key", `"Key Vault Secrets User"`, "megdocs-test"}},
		{"token rejected", CMSAPIKey, &failMode{status: 401, code: "Unauthorized"}, nil, "unauthorized", 401,
			[]string{"tenant"}},
		{"network", CMSAPIKey, &failMode{netErr: errors.New("dial tcp: lookup megdocs-test.vault.azure.net: no such host")}, nil, "unreachable", 0,
			[]string{fakeVaultURL, "KEY_VAULT_URL"}},
		{"no identity", CMSAPIKey, nil, errors.New("ManagedIdentityCredential: no managed identity endpoint"), "identity", 0,
			[]string{"managed identity", fakeVaultURL}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newFakeEnv(t)
			if tc.mode != nil {
				e.vault.setFail(tc.secret, *tc.mode)
			}
			if tc.credErr != nil {
				e.cred.SetError(tc.credErr)
			}
			_, err := e.kv.Get(context.Background(), tc.secret)
			var nc *NotConfiguredError
			if !errors.Is(err, ErrNotConfigured) || !errors.As(err, &nc) {
				t.Fatalf("err = %v, want *NotConfiguredError", err)
			}
			if nc.Name != tc.secret {
				t.Errorf("Name = %q, want %q", nc.Name, tc.secret)
			}
			var re *azcore.ResponseError
			if tc.status != 0 && (!errors.As(err, &re) || re.StatusCode != tc.status) {
				t.Errorf("the Key Vault response (%d) is not unwrappable from %v", tc.status, err)
			}
			if tc.credErr != nil && !errors.Is(err, tc.credErr) {
				t.Errorf("the credential's error is not unwrappable from %v", err)
			}
			lines := e.logs.StrictEvents(t, "secret_unavailable")
			if len(lines) != 1 {
				t.Fatalf("%d secret_unavailable lines, want 1", len(lines))
			}
			l := lines[0]
			if field(l, "level") != "error" || field(l, "reason") != tc.reason || field(l, "secret") != tc.secret || field(l, "vault") != fakeVaultURL {
				t.Errorf("log line = %v, want level error, reason %s, secret and vault", l, tc.reason)
			}
			logged := field(l, "problem") + " " + field(l, "fix")
			for _, want := range tc.contains {
				if !strings.Contains(nc.Reason, want) {
					t.Errorf("Reason %q lacks %q", nc.Reason, want)
				}
				if !strings.Contains(logged, want) {
					t.Errorf("log %q lacks %q", logged, want)
				}
			}

			// The failure is remembered for the backoff (no call per
			// request), then Key Vault is asked again.
			calls := e.vault.callCount()
			if _, err := e.kv.Get(context.Background(), tc.secret); !errors.Is(err, ErrNotConfigured) {
				t.Errorf("second Get: err = %v", err)
			}
			if n := e.vault.callCount(); n != calls {
				t.Errorf("second Get within the backoff called Key Vault")
			}
			e.clock.Advance(10 * time.Second)
			e.kv.Get(context.Background(), tc.secret)
			if tc.credErr == nil {
				if n := e.vault.callCount(); n != calls+1 {
					t.Errorf("after the backoff: %d calls, want %d", n, calls+1)
				}
			}
		})
	}
}

func TestKeyVaultOptionalSecretAbsentIsNoAlarm(t *testing.T) {
	e := newFakeEnv(t)
	_, err := e.kv.Get(context.Background(), CMSAPIKeyPrevious)
	if !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
	lines := e.logs.StrictEvents(t, "secret_unavailable")
	if len(lines) != 1 || field(lines[0], "level") != "info" {
		t.Errorf("log = %v, want one info line for an absent optional secret", lines)
	}
	// Refused is still an alarm, optional or not.
	e.vault.setFail(CMSAPIKeyPrevious, failMode{status: 403, code: "Forbidden"})
	e.clock.Advance(10 * time.Second)
	e.kv.Get(context.Background(), CMSAPIKeyPrevious)
	lines = e.logs.StrictEvents(t, "secret_unavailable")
	if len(lines) != 2 || field(lines[1], "level") != "error" {
		t.Errorf("log = %v, want an error line for a refused read", lines)
	}
}

func TestKeyVaultSecretCreatedLaterIsPickedUp(t *testing.T) {
	e := newFakeEnv(t)
	if _, err := e.kv.Get(context.Background(), WebhookSecret); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
	e.vault.put(WebhookSecret, ver1, "whsec-value-0001", nil)
	e.clock.Advance(10 * time.Second)
	if s := mustGet(t, e.kv, WebhookSecret); s.Version != ver1 {
		t.Errorf("Get = %s, want version %s", s, ver1)
	}
	if n := len(e.logs.StrictEvents(t, "secret_recovered")); n != 1 {
		t.Errorf("%d secret_recovered lines, want 1", n)
	}
}

func TestKeyVaultEmptyValueIsNotUsable(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(CMSAPIKey, ver1, "", nil)
	_, err := e.kv.Get(context.Background(), CMSAPIKey)
	if !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
	if l := e.logs.StrictEvents(t, "secret_unavailable"); len(l) != 1 || field(l[0], "reason") != "empty" {
		t.Errorf("log = %v, want reason empty", l)
	}
}

func TestKeyVaultGetVersionCachesForever(t *testing.T) {
	e := newFakeEnv(t)
	e.vault.put(EncryptionKey, ver1, "key-one", nil)
	e.vault.put(EncryptionKey, ver2, "key-two", nil)
	ctx := context.Background()

	s, err := e.kv.GetVersion(ctx, EncryptionKey, ver1)
	if err != nil || s.Version != ver1 || s.Value != "key-one" {
		t.Fatalf("GetVersion(v1) = %s, %v", s, err)
	}
	e.clock.Advance(365 * 24 * time.Hour)
	e.vault.setFail(EncryptionKey, failMode{status: 403, code: "Forbidden"}) // would fail if asked
	if s, err := e.kv.GetVersion(ctx, EncryptionKey, ver1); err != nil || s.Value != "key-one" {
		t.Errorf("GetVersion(v1) a year later = %s, %v; want the cached version", s, err)
	}
	if n := e.vault.callCount(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	e.vault.clearFail(EncryptionKey)

	// Reading the current version also caches it under its name.
	cur := mustGet(t, e.kv, EncryptionKey)
	if cur.Version != ver2 {
		t.Fatalf("current = %s, want %s", cur, ver2)
	}
	if s, err := e.kv.GetVersion(ctx, EncryptionKey, ver2); err != nil || s.Value != "key-two" {
		t.Errorf("GetVersion(current) = %s, %v", s, err)
	}
	if n := e.vault.callCount(); n != 2 {
		t.Errorf("%d calls, want 2 (the current read serves its version)", n)
	}

	_, err = e.kv.GetVersion(ctx, EncryptionKey, "33333333333333333333333333333333")
	var nc *NotConfiguredError
	if !errors.As(err, &nc) || !strings.Contains(nc.Reason, "33333333333333333333333333333333") || !strings.Contains(nc.Reason, "list-versions") {
		t.Errorf("GetVersion(missing) err = %v, want *NotConfiguredError naming the version", err)
	}
	calls := e.vault.callLog()
	last := calls[len(calls)-1]
	if got := last; got != EncryptionKey+"/33333333333333333333333333333333" {
		t.Errorf("last call %q, want the named version", got)
	}
}

func TestKeyVaultRejectsInvalidNames(t *testing.T) {
	e := newFakeEnv(t)
	ctx := context.Background()
	for _, name := range []string{"", "a/b", "a_b", "../x", "名前"} {
		if _, err := e.kv.Get(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Get(%q): err = %v, want ErrInvalidName", name, err)
		}
		if _, err := e.kv.Reload(ctx, name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Reload(%q): err = %v, want ErrInvalidName", name, err)
		}
	}
	for _, version := range []string{"", "../x", "a.b", "a/b"} {
		if _, err := e.kv.GetVersion(ctx, EncryptionKey, version); !errors.Is(err, ErrInvalidName) {
			t.Errorf("GetVersion(%q): err = %v, want ErrInvalidName", version, err)
		}
	}
	if n := e.vault.callCount(); n != 0 {
		t.Errorf("%d Key Vault calls for invalid names, want 0", n)
	}
}

func TestNewKeyVaultValidates(t *testing.T) {
	cred := &azfake.TokenCredential{}
	for _, tc := range []struct {
		name string
		url  string
		cred azcore.TokenCredential
		opts KeyVaultOptions
	}{
		{"plain http", "http://megdocs.vault.azure.net/", cred, KeyVaultOptions{}},
		{"empty", "", cred, KeyVaultOptions{}},
		{"no host", "https:///", cred, KeyVaultOptions{}},
		{"not a url", "megdocs.vault.azure.net", cred, KeyVaultOptions{}},
		{"credentials in url", "https://user:pw@megdocs.vault.azure.net/", cred, KeyVaultOptions{}},
		{"no credential", fakeVaultURL, nil, KeyVaultOptions{}},
		{"negative ttl", fakeVaultURL, cred, KeyVaultOptions{TTL: -time.Second, Now: time.Now}},
		{"no clock", fakeVaultURL, cred, KeyVaultOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewKeyVault(tc.url, tc.cred, tc.opts); err == nil || !strings.HasPrefix(err.Error(), "secrets: ") {
				t.Errorf("err = %v, want a secrets: error", err)
			}
		})
	}
	kv, err := NewKeyVault(fakeVaultURL, cred, KeyVaultOptions{Now: time.Now})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if kv.ttl != DefaultTTL || kv.backoff != 10*time.Second || kv.vaultName != "megdocs-test" {
		t.Errorf("defaults: ttl %s backoff %s vault name %q", kv.ttl, kv.backoff, kv.vaultName)
	}
	short, err := NewKeyVault(fakeVaultURL, cred, KeyVaultOptions{TTL: time.Second, Now: time.Now})
	if err != nil || short.backoff != time.Second {
		t.Errorf("backoff with a 1s TTL = %s, %v; want capped at the TTL", short.backoff, err)
	}
}
