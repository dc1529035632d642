package connectflow

import (
	"errors"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

func TestAllowlist(t *testing.T) {
	a, err := NewAllowlist([]string{
		"https://audits.example.com/accounts/settings/",
		"https://cms.example.org",
		"http://localhost:8000/app",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url  string
		want bool
	}{
		{"https://audits.example.com/accounts/settings/", true},
		{"https://audits.example.com/accounts/settings/?tab=microsoft", true},
		{"https://audits.example.com/accounts/settings/microsoft#top", true},
		{"HTTPS://AUDITS.EXAMPLE.COM/accounts/settings/?tab=microsoft", true}, // scheme and host case normalised
		{"https://audits.example.com:443/accounts/settings/", true},
		{"https://cms.example.org/", true},
		{"https://cms.example.org", true},
		{"https://cms.example.org/anything/below", true},
		{"http://localhost:8000/app", true},
		{"http://localhost:8000/app/", true},
		{"http://localhost:8000/app?x=1", true},

		// Host tricks.
		{"https://audits.example.com.evil.com/", false},
		{"https://audits.example.com.evil.com/accounts/settings/", false},
		{"https://audits.example.com@evil.com/", false},
		{"https://audits.example.com@evil.com/accounts/settings/", false},
		{"https://user:pass@audits.example.com/accounts/settings/", false},
		{"https://evil.com/audits.example.com/accounts/settings/", false},
		{"https://audits.example.com./accounts/settings/", false},
		{"https://cms.example.org.evil.com", false},
		{"https://cms.example.org:8443/", false},
		{"https://evilcms.example.org/", false},
		// Scheme tricks.
		{"//evil.com", false},
		{"//audits.example.com/accounts/settings/", false},
		{"javascript:alert(1)", false},
		{"JavaScript://audits.example.com/accounts/settings/%0aalert(1)", false},
		{"data:text/html,<script>alert(1)</script>", false},
		{"http://audits.example.com/accounts/settings/", false}, // downgrade
		{"/accounts/settings/", false},
		{"", false},
		// Path-prefix tricks.
		{"https://audits.example.com/accounts/settings", false},
		{"https://audits.example.com/accounts/settings-evil/", false},
		{"https://audits.example.com/accounts/settings/../../admin", false},
		{"https://audits.example.com/accounts/settings/%2e%2e/%2e%2e/admin", false},
		{"https://audits.example.com/accounts/settings/..%2f..%2fadmin", false},
		{"https://audits.example.com/accounts/settings/\\evil.com", false},
		{"https://audits.example.com/accounts/settings/\n", false},
		{"http://localhost:8000/application", false},
		{"http://localhost:8001/app", false},
	}
	for _, tt := range tests {
		if got := a.Allowed(tt.url); got != tt.want {
			t.Errorf("Allowed(%q) = %v, want %v", tt.url, got, tt.want)
		}
	}
}

func TestWithResultKeepsTheCMSQuery(t *testing.T) {
	got := withResult("https://a.example.com/s/?tab=microsoft&x=%2F", map[string][]string{"microsoft": {"error"}, "reason": {"access_denied"}})
	want := "https://a.example.com/s/?tab=microsoft&x=%2F&microsoft=error&reason=access_denied"
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got := withResult("https://a.example.com/s/", map[string][]string{"connect_code": {"c0de"}, "microsoft": {"signed_in"}}); got != "https://a.example.com/s/?microsoft=signed_in&connect_code=c0de" {
		t.Errorf("got %s", got)
	}
}

func TestValidUserID(t *testing.T) {
	long := strings.Repeat("a", 257)
	for _, ok := range []string{"42", "ada@contoso.com", "A-Z.a_z~0@9", long[:256], "...", ".a", "~"} {
		if err := validUserID(ok); err != nil {
			t.Errorf("validUserID(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", long, "a/b", "x#y", "x?y", `a\b`, "a%2Fb", "a b", "ü", "a\x00b", "tab\there", "\xff\xfe"} {
		var in *connection.Error
		if err := validUserID(bad); !errors.As(err, &in) || in.Code != "invalid_request" {
			t.Errorf("validUserID(%q) = %v, want an invalid_request *connection.Error", bad, err)
		}
	}
}
