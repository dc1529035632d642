package msidentity

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The seed corpora live in testdata/fuzz/<target>; these f.Add calls keep
// the most important shapes in the code too.

func FuzzParseTokenResponse(f *testing.F) {
	f.Add([]byte(`{"token_type":"Bearer","scope":"User.Read openid profile email","expires_in":3600,"ext_expires_in":3600,"access_token":"at","refresh_token":"rt","id_token":"a.b.c"}`))
	f.Add([]byte(`{"access_token":"at","expires_in":"3599"}`))
	f.Add([]byte(`{"error":"invalid_grant","error_codes":[700082]}`))
	f.Add([]byte(`{"access_token":"at","expires_in":1e400}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr, err := parseTokenResponse(body)
		if err != nil {
			if len(body) >= 8 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error %q echoes the body (it holds tokens)", err)
			}
			return
		}
		if tr.Error == "" && (tr.AccessToken == "" || tr.ExpiresIn <= 0) {
			t.Fatalf("accepted an unusable response: %+v", tr)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	f.Add(400, []byte(bodyInvalidGrant700082))
	f.Add(400, []byte(bodyInvalidGrant50196))
	f.Add(401, []byte(bodyInvalidClient))
	f.Add(401, []byte(`{"error":{"code":"InvalidAuthenticationToken","message":"Access token is empty.","innerError":{"date":"2026-11-25T23:30:00","request-id":"r","client-request-id":"c"}}}`))
	f.Add(400, []byte(`{"error":"invalid_grant","error_codes":["50196", 1e99, -1]}`))
	f.Add(503, []byte(`<html>`))
	f.Add(429, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		eb, ok := parseErrorBody(body)
		if ok && (eb.Error == "" || len(eb.Error) > 128) {
			t.Fatalf("ok with error code %q", eb.Error)
		}
		e := responseError(opRefresh, status, http.Header{"Retry-After": {"30"}}, body, time.Unix(0, 0))
		_ = e.ErrorClass()
		// The description (which may name the user) never reaches Error().
		without := *e
		without.Description = ""
		if e.Error() != without.Error() {
			t.Fatalf("Error() %q depends on the description", e.Error())
		}
		if e.RetryAfter() != 30*time.Second {
			t.Fatalf("RetryAfter = %v", e.RetryAfter())
		}
	})
}

func FuzzParseIDToken(f *testing.F) {
	enc := base64.RawURLEncoding
	f.Add("eyJ0eXAiOiJKV1QifQ." + enc.EncodeToString([]byte(`{"aud":"c","iss":"https://login.microsoftonline.com/t/v2.0","oid":"o","tid":"t"}`)) + ".sig")
	f.Add("a." + enc.EncodeToString([]byte(`{"aud":["c","d"]}`)) + ".")
	f.Add("a." + enc.EncodeToString([]byte(`{"aud":7}`)) + ".b")
	f.Add("...")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		c := &Client{clientID: "c", tenant: "common"}
		acct, err := c.account(raw, "https://login.microsoftonline.com/{tenantid}/v2.0")
		if err == nil && (acct.ID == "" || acct.TenantID == "") {
			t.Fatalf("accepted an id_token without oid/tid: %+v", acct)
		}
		if err != nil && raw != "" && len(raw) > 20 && strings.Contains(err.Error(), raw) {
			t.Fatalf("error %q echoes the token", err)
		}
	})
}
