package msidentity

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// The issuer an id_token must carry is the one the authority's discovery
// document announces ({tenantid} replaced by the token's tid), whatever host
// it names (facts/microsoft-identity.md).

const (
	chinaIssuerHost  = "https://login.partner.microsoftonline.cn"
	publicIssuerHost = "https://login.microsoftonline.com"
)

// claimsFor are good id_token claims for tenant tid issued by iss.
func claimsFor(tid, iss string) map[string]any {
	return map[string]any{"aud": testClientID, "iss": iss, "oid": testOID, "tid": tid, "ver": "2.0"}
}

func TestExchangeChecksTheDiscoveredIssuer(t *testing.T) {
	const otherTenant = "0f3c2a1b-8e7d-4c6b-a5f4-3e2d1c0b9a87"
	tests := []struct {
		name   string
		tenant string
		issuer func(authority string) string // the document's issuer
		claims func(authority string) map[string]any
		ok     bool
	}{
		{name: "China-like: issuer on another host, token from it", tenant: "common",
			issuer: func(string) string { return chinaIssuerHost + "/{tenantid}/v2.0" },
			claims: func(string) map[string]any { return claimsFor(testTenantID, chinaIssuerHost+"/"+testTenantID+"/v2.0") }, ok: true},
		{name: "China-like: token naming the authority's own host", tenant: "common",
			issuer: func(string) string { return chinaIssuerHost + "/{tenantid}/v2.0" },
			claims: func(a string) map[string]any { return claimsFor(testTenantID, a+"/"+testTenantID+"/v2.0") }},
		{name: "alias: authority login.windows.net, issuer login.microsoftonline.com", tenant: "organizations",
			issuer: func(string) string { return publicIssuerHost + "/{tenantid}/v2.0" },
			claims: func(string) map[string]any { return claimsFor(testTenantID, publicIssuerHost+"/"+testTenantID+"/v2.0") }, ok: true},
		{name: "template filled with another tenant than tid", tenant: "common",
			issuer: func(string) string { return publicIssuerHost + "/{tenantid}/v2.0" },
			claims: func(string) map[string]any { return claimsFor(testTenantID, publicIssuerHost+"/"+otherTenant+"/v2.0") }},
		{name: "consumers: the fixed personal tenant", tenant: "consumers",
			issuer: func(string) string { return publicIssuerHost + "/" + personalTenantID + "/v2.0" },
			claims: func(string) map[string]any {
				return claimsFor(personalTenantID, publicIssuerHost+"/"+personalTenantID+"/v2.0")
			}, ok: true},
		{name: "consumers: a work tenant's token", tenant: "consumers",
			issuer: func(string) string { return publicIssuerHost + "/" + personalTenantID + "/v2.0" },
			claims: func(string) map[string]any { return claimsFor(testTenantID, publicIssuerHost+"/"+testTenantID+"/v2.0") }},
		{name: "consumers: the document's issuer on a work tenant's token", tenant: "consumers",
			issuer: func(string) string { return publicIssuerHost + "/" + personalTenantID + "/v2.0" },
			claims: func(string) map[string]any {
				return claimsFor(testTenantID, publicIssuerHost+"/"+personalTenantID+"/v2.0")
			}},
		{name: "single tenant", tenant: testTenantID,
			issuer: func(string) string { return chinaIssuerHost + "/" + testTenantID + "/v2.0" },
			claims: func(string) map[string]any { return claimsFor(testTenantID, chinaIssuerHost+"/"+testTenantID+"/v2.0") }, ok: true},
		{name: "single tenant: another tenant with its own issuer", tenant: testTenantID,
			issuer: func(string) string { return chinaIssuerHost + "/" + testTenantID + "/v2.0" },
			claims: func(string) map[string]any { return claimsFor(otherTenant, chinaIssuerHost+"/"+otherTenant+"/v2.0") }},
		{name: "single tenant: the document's issuer but another tid", tenant: testTenantID,
			issuer: func(string) string { return chinaIssuerHost + "/" + testTenantID + "/v2.0" },
			claims: func(string) map[string]any { return claimsFor(otherTenant, chinaIssuerHost+"/"+testTenantID+"/v2.0") }},
		{name: "tid that is not a tenant ID, pasted into the template", tenant: "common",
			issuer: func(string) string { return publicIssuerHost + "/{tenantid}/v2.0" },
			claims: func(string) map[string]any { return claimsFor("x/../y", publicIssuerHost+"/x/../y/v2.0") }},
		{name: "iss with a trailing slash is not the issuer", tenant: "common",
			issuer: func(string) string { return publicIssuerHost + "/{tenantid}/v2.0" },
			claims: func(string) map[string]any {
				return claimsFor(testTenantID, publicIssuerHost+"/"+testTenantID+"/v2.0/")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *standIn
			var docPath string
			srv = newStandInDiscovery(t, func(w http.ResponseWriter, r *http.Request) {
				docPath = r.URL.Path
				writeJSONBody(w, 200, discoveryJSON(t, srv.URL, tt.tenant, tt.issuer(srv.URL)))
			}, func(w http.ResponseWriter, r *http.Request) {
				writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, tt.claims(srv.URL))}))
			})
			c := newTestClient(t, srv.URL, withTenant(tt.tenant))
			got, err := c.Exchange(context.Background(), "code", "verifier")
			if want := "/" + tt.tenant + "/v2.0/.well-known/openid-configuration"; docPath != want {
				t.Errorf("discovery path = %q, want %q", docPath, want)
			}
			if tt.ok {
				if err != nil || got.Account.ID != testOID {
					t.Fatalf("Exchange = %+v, %v; want the account", got.Account, err)
				}
				return
			}
			var ie *IDTokenError
			if !errors.As(err, &ie) || got.AccessToken != "" {
				t.Fatalf("Exchange = %+v, %v; want *IDTokenError and no tokens", got, err)
			}
		})
	}
}

func TestDiscoveryFailureIsAServerErrorAndSendsNoCode(t *testing.T) {
	tests := []struct {
		name     string
		discover http.HandlerFunc
		closed   bool // the authority does not answer at all
		timeout  bool
	}{
		{name: "unreachable", closed: true},
		{name: "404", discover: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "500 with an issuer", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 500, []byte(`{"issuer":"https://login.microsoftonline.com/{tenantid}/v2.0"}`))
		}},
		{name: "invalid_tenant", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 400, []byte(`{"error":"invalid_tenant","error_codes":[90002]}`))
		}},
		{name: "HTML", discover: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>sign in to the Wi-Fi</html>"))
		}},
		{name: "truncated JSON", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 200, []byte(`{"issuer":"https://login.micro`))
		}},
		{name: "no issuer", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 200, []byte(`{"token_endpoint":"https://login.microsoftonline.com/common/oauth2/v2.0/token"}`))
		}},
		{name: "issuer not a URL", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 200, []byte(`{"issuer":"{tenantid}"}`))
		}},
		{name: "issuer not a string", discover: func(w http.ResponseWriter, r *http.Request) {
			writeJSONBody(w, 200, []byte(`{"issuer":42}`))
		}},
		{name: "too slow", timeout: true, discover: func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *standIn
			srv = newStandInDiscovery(t, tt.discover, func(w http.ResponseWriter, r *http.Request) {
				writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
			})
			c := newTestClient(t, srv.URL)
			c.disc.timeout = 200 * time.Millisecond
			docURL := srv.URL + "/common/v2.0/.well-known/openid-configuration"
			if tt.closed {
				srv.Close()
			}
			start := time.Now()
			_, err := c.Exchange(context.Background(), "code", "verifier")
			var de *DiscoveryError
			if !errors.As(err, &de) {
				t.Fatalf("Exchange = %v, want *DiscoveryError", err)
			}
			if de.URL != docURL || !strings.Contains(err.Error(), docURL) {
				t.Errorf("error %q does not name %s", err, docURL)
			}
			if !de.ServerError() || connection.ClassOf(err) != connection.ClassTransient || connection.CodeOf(err, "") != "discovery_failed" {
				t.Errorf("error %v: want a transient server error with code discovery_failed", err)
			}
			if tt.timeout && (!errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second) {
				t.Errorf("slow document: %v after %v, want the discovery timeout", err, time.Since(start))
			}
			if n := srv.count.Load(); n != 0 {
				t.Errorf("%d token requests without a discovery document, want 0", n)
			}
		})
	}
}

func TestDiscoveryIsCachedForAnHour(t *testing.T) {
	clk := newClock()
	var srv *standIn
	srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
	})
	c := newTestClient(t, srv.URL, withClock(clk))
	exchange := func(wantFetches int64) {
		t.Helper()
		if _, err := c.Exchange(context.Background(), "code", "verifier"); err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		if n := srv.discoveries.Load(); n != wantFetches {
			t.Fatalf("after %v: %d discovery fetches, want %d", clk.Now(), n, wantFetches)
		}
	}
	exchange(1)
	exchange(1)
	clk.Advance(discoveryTTL - time.Second)
	exchange(1)
	clk.Advance(time.Second)
	exchange(2)
}

func TestDiscoveryFailureIsRememberedBrieflyAndNeverReplacesAFreshDocument(t *testing.T) {
	clk := newClock()
	var mu sync.Mutex
	failing := true
	var srv *standIn
	srv = newStandInDiscovery(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		writeJSONBody(w, 200, discoveryJSON(t, srv.URL, "common", srv.URL+"/{tenantid}/v2.0"))
	}, func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
	})
	setFailing := func(f bool) { mu.Lock(); failing = f; mu.Unlock() }
	c := newTestClient(t, srv.URL, withClock(clk))
	exchange := func(wantOK bool, wantFetches int64) {
		t.Helper()
		_, err := c.Exchange(context.Background(), "code", "verifier")
		if (err == nil) != wantOK {
			t.Fatalf("after %v: Exchange = %v, want ok=%v", clk.Now(), err, wantOK)
		}
		if n := srv.discoveries.Load(); n != wantFetches {
			t.Fatalf("after %v: %d discovery fetches, want %d", clk.Now(), n, wantFetches)
		}
	}
	exchange(false, 1)
	exchange(false, 1) // the failure is remembered...
	clk.Advance(discoveryFailureTTL - time.Second)
	exchange(false, 1)
	setFailing(false)
	clk.Advance(time.Second) // ...briefly
	exchange(true, 2)

	// A good document stays in use for its hour, whatever the authority
	// answers meanwhile.
	setFailing(true)
	clk.Advance(30 * time.Minute)
	exchange(true, 2)
	clk.Advance(30 * time.Minute)
	exchange(false, 3) // an hour on, it must be read again: never an unchecked iss
}

func TestConcurrentExchangesShareOneDiscoveryFetch(t *testing.T) {
	release := make(chan struct{})
	var srv *standIn
	srv = newStandInDiscovery(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSONBody(w, 200, discoveryJSON(t, srv.URL, "common", srv.URL+"/{tenantid}/v2.0"))
	}, func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
	})
	c := newTestClient(t, srv.URL)

	// A caller that gives up does not fail the fetch the others wait for.
	quitter, quit := context.WithCancel(context.Background())
	quitErr := make(chan error, 1)
	go func() {
		_, err := c.Exchange(quitter, "code", "verifier")
		quitErr <- err
	}()
	for srv.discoveries.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const n = 16
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Exchange(context.Background(), "code", "verifier")
			errs <- err
		}()
	}
	quit()
	var de *DiscoveryError
	if err := <-quitErr; !errors.As(err, &de) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v, want a *DiscoveryError wrapping context.Canceled", err)
	}
	time.Sleep(20 * time.Millisecond) // let the others queue behind the fetch
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("Exchange: %v", err)
		}
	}
	if got := srv.discoveries.Load(); got != 1 {
		t.Errorf("%d discovery fetches for %d concurrent exchanges, want 1", got, n+1)
	}
}
