package msidentity

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/devidp"
)

// CheckCredential against the stand-in: the request Microsoft documents
// for the client-credentials grant, and its refusals as typed errors.
func TestCheckCredential(t *testing.T) {
	idp, base := startStandIn(t, devidp.Config{ClientSecret: testSecret})
	c := newTestClient(t, base)
	if err := c.CheckCredential(context.Background(), testTenantID); err != nil {
		t.Fatalf("CheckCredential with the right secret: %v", err)
	}
	if got := idp.TokenRequests("client_credentials"); got != 1 {
		t.Errorf("client_credentials requests = %d, want 1", got)
	}

	wantCodes := func(t *testing.T, err error, code string, aadsts int) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.Code != code || !e.HasErrorCode(aadsts) || e.Op != "client_credentials" {
			t.Fatalf("err = %v, want %s with AADSTS%d", err, code, aadsts)
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Error("the error names the secret")
		}
	}
	err := c.CheckCredential(context.Background(), "0f0f0f0f-1111-4222-8333-444455556666")
	wantCodes(t, err, "unauthorized_client", 700016)

	idp.SetClientSecrets("another")
	wantCodes(t, c.CheckCredential(context.Background(), testTenantID), "invalid_client", 7000215)

	idp.SetClientSecrets(testSecret)
	idp.ExpireClientSecrets()
	before := idp.TokenRequests("client_credentials")
	wantCodes(t, c.CheckCredential(context.Background(), testTenantID), "invalid_client", 7000222)
	// The same rules as every token request: on invalid_client the
	// credential is renewed and the request sent once more.
	if got := idp.TokenRequests("client_credentials") - before; got != 2 {
		t.Errorf("requests for an expired secret = %d, want 2 (one retry after renewing)", got)
	}

	if err := c.CheckCredential(context.Background(), "a/b"); err == nil {
		t.Error("a tenant that is not a path segment was sent")
	}
}

func TestCheckCredentialRequest(t *testing.T) {
	s := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, 200, []byte(`{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"app-only"}`))
	})
	c := newTestClient(t, s.URL)
	if err := c.CheckCredential(context.Background(), testTenantID); err != nil {
		t.Fatal(err)
	}
	r := s.last(t)
	if r.Path != "/"+testTenantID+"/oauth2/v2.0/token" || r.Header.Get("Authorization") != "" {
		t.Errorf("request = %s %s (Authorization %q)", r.Method, r.Path, r.Header.Get("Authorization"))
	}
	want := map[string]string{"grant_type": "client_credentials", "client_id": testClientID, "scope": s.URL + "/.default", "client_secret": testSecret}
	for k, v := range want {
		if r.Form.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, r.Form.Get(k), v)
		}
	}
	if len(r.Form) != len(want) {
		t.Errorf("form = %v, want exactly %v", r.Form, want)
	}
}
