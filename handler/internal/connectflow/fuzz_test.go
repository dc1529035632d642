package connectflow

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// FuzzValidateUserID: the connect flow refuses exactly the user_ids the one
// rule (connection.ValidUserID) refuses, as a 400 invalid_request, so
// nothing the API lets in is refused by the store (a 500); and every
// accepted id survives the host's decoding of the path unchanged: it needs
// no escaping, and unescaping it changes nothing.
func FuzzValidateUserID(f *testing.F) {
	for _, s := range []string{"42", "a/b", "x#y?z", `back\slash`, "ünïcødé 日本", "...", ".a", "", ".", "..", "~", "a@b.c",
		"a\x00b", "tab\there", "del\x7f", "c1\u0085", "\xff\xfe", "\u00a0", "~41", "%2F", "%41", strings.Repeat("é", 128), strings.Repeat("a", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		apiErr := validUserID(id)
		ruleErr := connection.ValidUserID(id)
		if (apiErr == nil) != (ruleErr == nil) {
			t.Fatalf("validUserID(%q) = %v but connection.ValidUserID = %v", id, apiErr, ruleErr)
		}
		if apiErr != nil {
			var in *connection.Error
			if !errors.As(apiErr, &in) || in.Code != "invalid_request" || in.Message == "" {
				t.Fatalf("validUserID(%q) = %#v, want an invalid_request *connection.Error", id, apiErr)
			}
			if !errors.Is(ruleErr, connection.ErrInvalidUserID) {
				t.Fatalf("connection.ValidUserID(%q) = %v, want ErrInvalidUserID", id, ruleErr)
			}
			return
		}
		if seg := url.PathEscape(id); seg != id {
			t.Fatalf("PathEscape(%q) = %q: a valid id must need no escaping", id, seg)
		}
		if back, err := url.PathUnescape(id); err != nil || back != id {
			t.Fatalf("PathUnescape(%q) = %q, %v: the host's decoding would change a valid id", id, back, err)
		}
		if id == "." || id == ".." || len(id) > 256 {
			t.Fatalf("accepted %q", id)
		}
	})
}

// fuzzPrefixes are the configured prefixes every FuzzAllowlist run starts
// from; the fuzzer adds one of its own.
var fuzzPrefixes = []string{
	"https://audits.example.com/accounts/settings/",
	"https://cms.example.org",
	"http://localhost:8000/app",
	"https://[::1]:8443/x?tab=ms",
}

// FuzzAllowlist: whatever the prefixes and the candidate, Allowed never
// lets through a URL the browser would leave the allowed origins for: an
// allowed URL parses to an absolute http(s) URL without user info whose
// scheme, host and port are those of a configured prefix and whose path
// continues that prefix's path at a segment boundary; the redirect the
// callback builds from it (withResult) has that same origin; and every
// prefix the allowlist accepts allows itself.
func FuzzAllowlist(f *testing.F) {
	for _, s := range []string{
		"https://audits.example.com/accounts/settings/?tab=microsoft",
		"HTTPS://AUDITS.EXAMPLE.COM:443/accounts/settings/x#top",
		"https://audits.example.com.evil.com/accounts/settings/",
		"https://audits.example.com@evil.com/accounts/settings/",
		"https://audits.example.com\\@evil.com/accounts/settings/",
		"https://audits.example.com/accounts/settings/%2e%2e/admin",
		"//evil.com/accounts/settings/",
		"https:/\\evil.com",
		"https://cms.example.org%2f@evil.com",
		"https://cms.example.org:443%40evil.com/",
		"https://cms.example.org:0443/",
		"https://[::1]:8443/x?tab=ms&z",
		"http://localhost:8000/app/../../admin",
		"http://LOCALHOST:80/app",
		"https://xn--cms-example-org/",
		"https://cms.example.org\u3002evil.com/",
	} {
		f.Add("https://other.example.net/cb/", s)
	}
	f.Add("https://a.example.com:443", "https://a.example.com/")
	f.Add("http://a.example.com/p?q=1", "http://a.example.com/p?q=10")
	f.Add("https://A.example.com./", "https://a.example.com/")
	f.Fuzz(func(t *testing.T, extra, candidate string) {
		prefixes := fuzzPrefixes
		if a, err := NewAllowlist([]string{extra}); err == nil {
			prefixes = append(append([]string(nil), fuzzPrefixes...), extra)
			if !a.Allowed(extra) {
				t.Fatalf("the allowlist accepts prefix %q but does not allow it", extra)
			}
		}
		a, err := NewAllowlist(prefixes)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Allowed(candidate) {
			return
		}
		u := browserView(t, candidate)
		var match string
		for _, p := range prefixes {
			pu := browserView(t, p)
			if pu.scheme == u.scheme && pu.host == u.host && pu.port == u.port && underPath(pu.path, u.path) {
				match = p
				break
			}
		}
		if match == "" {
			t.Fatalf("Allowed(%q) = true, but its origin %s://%s:%s%s is under no prefix of %q", candidate, u.scheme, u.host, u.port, u.path, prefixes)
		}
		for _, result := range []url.Values{{"microsoft": {"connected"}}, {"microsoft": {"error"}, "reason": {ReasonAccessDenied}}} {
			loc := withResult(candidate, result)
			if l := browserView(t, loc); l.scheme != u.scheme || l.host != u.host || l.port != u.port {
				t.Fatalf("the redirect for allowed %q is %q: origin %s://%s:%s", candidate, loc, l.scheme, l.host, l.port)
			}
		}
	})
}

// origin is how a browser resolves a Location header, computed without
// this package's parser: lower-case scheme and host, the scheme's default
// port made explicit, the path decoded.
type origin struct{ scheme, host, port, path string }

func browserView(t *testing.T, raw string) origin {
	t.Helper()
	// A browser strips tabs and newlines and treats '\' as '/' in http(s)
	// URLs; a URL that changes under either would be read differently.
	if strings.ContainsAny(raw, "\t\r\n\\") {
		t.Fatalf("%q holds characters a browser rewrites", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%q does not parse: %v", raw, err)
	}
	o := origin{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port(), path: u.Path}
	if o.scheme != "http" && o.scheme != "https" || u.Opaque != "" || u.User != nil || o.host == "" {
		t.Fatalf("%q: scheme %q, opaque %q, user %v, host %q: not an absolute http(s) URL", raw, u.Scheme, u.Opaque, u.User, u.Host)
	}
	if strings.ContainsAny(o.host, "@/\\") || strings.Contains(o.host, ":") && !validIP(o.host) {
		t.Fatalf("%q: host %q", raw, o.host)
	}
	if o.port == "" {
		o.port = map[string]string{"http": "80", "https": "443"}[o.scheme]
	}
	return o
}

func validIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}

// underPath: candidate is the prefix's path or continues it at a '/'.
func underPath(prefix, candidate string) bool {
	if prefix == "" {
		prefix = "/"
	}
	if candidate == "" {
		candidate = "/"
	}
	return candidate == prefix || strings.HasPrefix(candidate, strings.TrimSuffix(prefix, "/")+"/")
}
