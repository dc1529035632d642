package msidentity

import (
	"strings"
	"testing"
)

// FuzzParseProfile feeds any Graph /v1.0/me body to the parser the connect
// flow uses. It never panics; it accepts only a profile with an id; the
// e-mail it derives is mail or, without one, userPrincipalName; and an
// error never quotes the body (a profile names the user, and the error
// goes to the log).
func FuzzParseProfile(f *testing.F) {
	f.Add([]byte(`{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users/$entity","id":"5d2f4c3b-7a8e-4f1d-9c6b-2e3a4b5c6d7e","displayName":"Ada Lovelace","mail":"ada@contoso.com","userPrincipalName":"ada@contoso.com"}`))
	f.Add([]byte(`{"id":"6b1e4f0a9c2d7e35","displayName":"Alan Turing","mail":null,"userPrincipalName":"alan.turing@outlook.com"}`))
	f.Add([]byte(`{"id":"","mail":"x@y"}`))
	f.Add([]byte(`{"id":7}`))
	f.Add([]byte(`{"id":"a","mail":["ada@contoso.com"]}`))
	f.Add([]byte(`{"id":"a","displayName":"\ud800"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`<html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseProfile(body)
		if err != nil {
			if len(body) >= 8 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error %q quotes the body", err)
			}
			return
		}
		if p.ID == "" {
			t.Fatalf("accepted a profile without an id: %+v", p)
		}
		want := p.Mail
		if want == "" {
			want = p.UserPrincipalName
		}
		if p.Email() != want {
			t.Fatalf("Email() = %q for mail %q upn %q", p.Email(), p.Mail, p.UserPrincipalName)
		}
	})
}
