package msidentity

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// fakeTokenCredential serves tokens[i] on the i-th call (the last repeats),
// each valid for ttl, and records the options.
type fakeTokenCredential struct {
	mu     sync.Mutex
	tokens []string
	ttl    time.Duration
	now    func() time.Time
	err    error
	calls  []policy.TokenRequestOptions
}

func (f *fakeTokenCredential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, opts)
	if f.err != nil {
		return azcore.AccessToken{}, f.err
	}
	i := min(len(f.calls), len(f.tokens)) - 1
	return azcore.AccessToken{Token: f.tokens[i], ExpiresOn: f.now().Add(f.ttl)}, nil
}

func (f *fakeTokenCredential) callOpts() []policy.TokenRequestOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]policy.TokenRequestOptions(nil), f.calls...)
}

func TestAssertionCredentialCachesAndRenews(t *testing.T) {
	clk := newClock()
	tc := &fakeTokenCredential{tokens: []string{"mi-1", "mi-2", "mi-3"}, ttl: time.Hour, now: clk.Now}
	cred := NewAssertionCredential(tc, clk.Now)
	apply := func() string {
		t.Helper()
		form := url.Values{}
		if err := cred.Apply(context.Background(), form); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if form.Get("client_assertion_type") != AssertionType {
			t.Fatalf("client_assertion_type = %q", form.Get("client_assertion_type"))
		}
		if _, ok := form["client_secret"]; ok {
			t.Fatal("client_secret set by the assertion credential")
		}
		return form.Get("client_assertion")
	}

	if got := apply(); got != "mi-1" {
		t.Fatalf("first assertion = %q, want mi-1", got)
	}
	clk.Advance(54 * time.Minute) // 6 minutes left: still cached
	if got := apply(); got != "mi-1" || len(tc.callOpts()) != 1 {
		t.Fatalf("assertion = %q after %d fetches, want the cached mi-1 after 1", got, len(tc.callOpts()))
	}
	clk.Advance(2 * time.Minute) // 4 minutes left: replaced
	if got := apply(); got != "mi-2" {
		t.Fatalf("assertion near expiry = %q, want mi-2", got)
	}
	if err := cred.Renew(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := apply(); got != "mi-3" {
		t.Fatalf("assertion after Renew = %q, want mi-3", got)
	}
	calls := tc.callOpts()
	if len(calls) != 3 {
		t.Fatalf("fetches = %d, want 3", len(calls))
	}
	for i, c := range calls {
		if len(c.Scopes) != 1 || c.Scopes[0] != AssertionScope {
			t.Errorf("fetch %d scopes = %v, want [%s]", i, c.Scopes, AssertionScope)
		}
	}
	if calls[0].Claims != "" || calls[1].Claims != "" {
		t.Errorf("plain fetches sent claims %q, %q: they would bypass the SDK's cache every time", calls[0].Claims, calls[1].Claims)
	}
	if !strings.Contains(calls[2].Claims, `"access_token"`) {
		t.Errorf("Renew's claims = %q, want a claims request (it makes azidentity skip its cache)", calls[2].Claims)
	}

	tc.mu.Lock()
	tc.err = errors.New("identity endpoint down")
	tc.mu.Unlock()
	if err := cred.Renew(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "msidentity: ") {
		t.Errorf("Renew with a failing identity = %v", err)
	}
}

func TestSecretCredential(t *testing.T) {
	sentinel := errors.New("not configured")
	var reloads int
	src := SecretFunc(func(_ context.Context, name string, reload bool) (string, error) {
		if name != ClientSecretName {
			t.Errorf("secret name = %q", name)
		}
		if reload {
			reloads++
			return "new", nil
		}
		if reloads > 0 {
			return "new", nil
		}
		return "old", nil
	})
	cred := NewSecretCredential(src)
	form := url.Values{}
	if err := cred.Apply(context.Background(), form); err != nil || form.Get("client_secret") != "old" {
		t.Fatalf("Apply = %v, form %v", err, form)
	}
	if err := cred.Renew(context.Background()); err != nil || reloads != 1 {
		t.Fatalf("Renew = %v after %d reloads", err, reloads)
	}
	if err := cred.Apply(context.Background(), form); err != nil || form.Get("client_secret") != "new" {
		t.Fatalf("Apply after Renew = %v, form %v", err, form)
	}

	failing := NewSecretCredential(SecretFunc(func(context.Context, string, bool) (string, error) { return "", sentinel }))
	if err := failing.Apply(context.Background(), url.Values{}); !errors.Is(err, sentinel) {
		t.Errorf("Apply error = %v, want it to wrap the source's error", err)
	}
	if err := failing.Renew(context.Background()); !errors.Is(err, sentinel) {
		t.Errorf("Renew error = %v, want it to wrap the source's error", err)
	}
	empty := NewSecretCredential(SecretFunc(func(context.Context, string, bool) (string, error) { return "", nil }))
	if err := empty.Apply(context.Background(), url.Values{}); err == nil {
		t.Error("Apply with an empty secret succeeded")
	}
}

// rotatingEndpoint accepts only client_secret == current.
func rotatingEndpoint(t *testing.T, current func() string, srvURL *string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PostForm.Get("client_secret") != current() {
			writeJSONBody(w, 401, []byte(bodyInvalidClient))
			return
		}
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(*srvURL))}))
	}
}

func TestInvalidClientRenewsTheCredentialAndRetriesOnce(t *testing.T) {
	ops := map[string]func(*Client) (Tokens, error){
		"refresh":  func(c *Client) (Tokens, error) { return c.Refresh(context.Background(), "rt") },
		"exchange": func(c *Client) (Tokens, error) { return c.Exchange(context.Background(), "code", "verifier") },
	}
	for opName, op := range ops {
		t.Run("rotated secret/"+opName, func(t *testing.T) {
			src := &secrets{cached: "old", vault: "new"}
			var base string
			srv := newStandIn(t, rotatingEndpoint(t, func() string { return "new" }, &base))
			base = srv.URL
			c := newTestClient(t, srv.URL, withCredential(NewSecretCredential(src)))
			if _, err := op(c); err != nil {
				t.Fatalf("%s = %v, want success after renewing the secret", opName, err)
			}
			if _, reloads := src.counts(); reloads != 1 || srv.count.Load() != 2 {
				t.Errorf("reloads, requests = %d, %d; want 1, 2", reloads, srv.count.Load())
			}
		})
		t.Run("still wrong after renewal/"+opName, func(t *testing.T) {
			src := &secrets{cached: "old", vault: "also-old"}
			var base string
			srv := newStandIn(t, rotatingEndpoint(t, func() string { return "new" }, &base))
			base = srv.URL
			c := newTestClient(t, srv.URL, withCredential(NewSecretCredential(src)))
			_, err := op(c)
			if connection.ClassOf(err) != connection.ClassConfiguration || connection.CodeOf(err, "") != "invalid_client" {
				t.Fatalf("%s = %v, want configuration invalid_client", opName, err)
			}
			if _, reloads := src.counts(); reloads != 1 || srv.count.Load() != 2 {
				t.Errorf("reloads, requests = %d, %d; want 1, 2 (one retry, no loop)", reloads, srv.count.Load())
			}
		})
		t.Run("renewal fails/"+opName, func(t *testing.T) {
			src := &secrets{cached: "old", vault: "new", err: errors.New("vault unreachable")}
			var base string
			srv := newStandIn(t, rotatingEndpoint(t, func() string { return "new" }, &base))
			base = srv.URL
			logs := &logtest.Buffer{}
			c := newTestClient(t, srv.URL, withCredential(NewSecretCredential(src)), withLogger(zerolog.New(logs)))
			_, err := op(c)
			if connection.CodeOf(err, "") != "invalid_client" || srv.count.Load() != 1 {
				t.Fatalf("%s = %v after %d requests; want Microsoft's invalid_client after 1", opName, err, srv.count.Load())
			}
			if len(logs.StrictEvents(t, "client_credential_renew_failed")) != 1 {
				t.Errorf("no client_credential_renew_failed event in %s", logs)
			}
		})
	}

	t.Run("concurrent failures renew once", func(t *testing.T) {
		const n = 6
		src := &secrets{cached: "old", vault: "new"}
		arrived := make(chan struct{}, n)
		release := make(chan struct{})
		var base string
		inner := rotatingEndpoint(t, func() string { return "new" }, &base)
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			if r.PostForm.Get("client_secret") == "old" {
				// Hold the first round until every caller has sent it, so
				// all of them fail with the same (old) credential.
				arrived <- struct{}{}
				<-release
			}
			inner(w, r)
		})
		base = srv.URL
		c := newTestClient(t, srv.URL, withCredential(NewSecretCredential(src)))
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Refresh(context.Background(), "rt")
				errs <- err
			}()
		}
		for range n {
			<-arrived
		}
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Refresh = %v", err)
			}
		}
		if _, reloads := src.counts(); reloads != 1 {
			t.Errorf("reloads = %d, want 1 for %d requests that failed with the same secret", reloads, n)
		}
		if got := srv.count.Load(); got != 2*n {
			t.Errorf("requests = %d, want %d", got, 2*n)
		}
	})

	t.Run("stale assertion replaced", func(t *testing.T) {
		clk := newClock()
		tc := &fakeTokenCredential{tokens: []string{"mi-stale", "mi-fresh"}, ttl: time.Hour, now: clk.Now}
		var base string
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			if r.PostForm.Get("client_assertion") != "mi-fresh" {
				writeJSONBody(w, 401, []byte(`{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024]}`))
				return
			}
			writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(base))}))
		})
		base = srv.URL
		c := newTestClient(t, srv.URL, withClock(clk), withCredential(NewAssertionCredential(tc, clk.Now)))
		if _, err := c.Exchange(context.Background(), "code", "verifier"); err != nil {
			t.Fatalf("Exchange = %v", err)
		}
		if _, err := c.Refresh(context.Background(), "rt"); err != nil {
			t.Fatalf("Refresh = %v", err)
		}
		if calls, reqs := len(tc.callOpts()), srv.count.Load(); calls != 2 || reqs != 3 {
			t.Errorf("identity fetches, requests = %d, %d; want 2, 3", calls, reqs)
		}
	})
}
