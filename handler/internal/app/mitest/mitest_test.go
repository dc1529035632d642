// Package mitest proves the secretless mode end to end (issue 8): the real
// handler authenticates to the token endpoint with its managed identity's
// token as client_assertion, fetched by azidentity's real credential from a
// stand-in of the Functions managed-identity endpoint. It lives in its own
// package because azidentity caches managed-identity tokens per process.
package mitest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/devstack"
)

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

func TestSecretlessExchangeAndRefresh(t *testing.T) {
	if os.Getenv(azurite.SkipEnv) == "1" {
		t.Skip("SKIP_AZURITE=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Four-minute tokens: inside the refresh margin, so every token call
	// refreshes, with the assertion.
	s, err := devstack.Start(ctx, devstack.Options{WithoutCMS: true, ManagedIdentity: true, IdentityExpiresIn: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	for _, k := range []string{"MICROSOFT_CLIENT_SECRET", "KEY_VAULT_URL"} {
		if s.Settings[k] != "" {
			t.Fatalf("%s is set: the secretless mode must not need it", k)
		}
	}

	// Connect: the code exchange authenticates with the assertion.
	noFollow := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	jar, _ := cookiejar.New(nil)
	b := &http.Client{Jar: jar, CheckRedirect: noFollow, Timeout: 30 * time.Second}
	sess := call(t, s, http.MethodPost, "/api/connect-sessions", `{"user_id":"mi","return_url":"http://localhost/s/"}`)
	var out struct {
		ConnectURL string `json:"connect_url"`
	}
	_ = json.Unmarshal(sess, &out)
	resp, err := b.Get(out.ConnectURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, err := s.IDP.SignIn(ctx, nil, resp.Header.Get("Location"), "ada@contoso.com")
	if err != nil {
		t.Fatal(err)
	}
	resp, err = b.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	if back == nil || back.Query().Get("microsoft") != "signed_in" {
		t.Fatalf("callback sent the browser to %q", resp.Header.Get("Location"))
	}
	// v2: the CMS completes the connect for its logged-in user.
	call(t, s, http.MethodPost, "/api/connections/mi/complete", `{"connect_code":"`+back.Query().Get("connect_code")+`"}`)
	if n := s.IDP.ManagedIdentityRequests(); n == 0 {
		t.Fatal("the managed identity endpoint was never asked: the exchange did not use an assertion")
	}

	// Refresh: also by assertion, reusing the cached one.
	mi := s.IDP.ManagedIdentityRequests()
	for i := 0; i < 3; i++ {
		call(t, s, http.MethodPost, "/api/connections/mi/token", "")
	}
	if got := s.IDP.TokenRequests("refresh_token"); got != 3 {
		t.Errorf("refreshes = %d, want 3", got)
	}
	if got := s.IDP.ManagedIdentityRequests(); got != mi {
		t.Errorf("the assertion was fetched %d more times; it should be cached until shortly before it expires", got-mi)
	}

	// A stale assertion (the stand-in stops accepting it) is replaced after
	// invalid_client, and the same request succeeds.
	s.IDP.InvalidateAssertions()
	call(t, s, http.MethodPost, "/api/connections/mi/token", "")
	if got := s.IDP.ManagedIdentityRequests(); got != mi+1 {
		t.Errorf("managed identity requests after invalid_client = %d, want %d", got, mi+1)
	}
}

func call(t *testing.T, s *devstack.Stack, method, path, body string) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, s.HandlerURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.CMSKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}
