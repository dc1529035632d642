// Package hosttest plays the Azure Functions host's part between a client
// and the custom handler in tests: an http.RoundTripper that rewrites every
// request to the handler the way the host does before it forwards it
// (enableForwardingHttpRequest), and answers the host's own 404 for a
// request no function's route matches, which the handler then never sees.
//
// The rules, with their sources, are in docs/architecture.md ("What the
// Functions host does to a request"); each is a function here with its own
// test. Test support only: the product never imports it.
package hosttest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Function is one function of the app, as its function.json declares it.
type Function struct {
	// Name is the function's folder name.
	Name string
	// HTTP: the function has an httpTrigger (then Route and Methods apply);
	// otherwise the host invokes it itself as POST /<Name>.
	HTTP bool
	// Route is the httpTrigger's route template, without the route prefix
	// (for example "connections/{*rest}"). Empty means the function name.
	Route string
	// Methods are the trigger's methods, upper case; empty means any.
	Methods []string
}

// LoadFunctions reads dir/*/function.json (the repository's functions
// folder, or a packaged app's root).
func LoadFunctions(dir string) ([]Function, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "function.json"))
	if err != nil {
		return nil, fmt.Errorf("hosttest: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("hosttest: no */function.json under %s", dir)
	}
	sort.Strings(paths)
	var fns []Function
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("hosttest: %w", err)
		}
		var doc struct {
			Bindings []struct {
				Type    string   `json:"type"`
				Route   string   `json:"route"`
				Methods []string `json:"methods"`
			} `json:"bindings"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("hosttest: %s: %w", p, err)
		}
		fn := Function{Name: filepath.Base(filepath.Dir(p))}
		for _, b := range doc.Bindings {
			if !strings.EqualFold(b.Type, "httpTrigger") {
				continue
			}
			fn.HTTP, fn.Route = true, b.Route
			for _, m := range b.Methods {
				fn.Methods = append(fn.Methods, strings.ToUpper(m))
			}
		}
		fns = append(fns, fn)
	}
	return fns, nil
}

// Transport forwards requests for the handler's addresses (see Forward) as
// the Functions host would, and every other request unchanged through
// Base. It is safe for concurrent use.
type Transport struct {
	// Base carries the requests (http.DefaultTransport when nil).
	Base http.RoundTripper
	// Functions are the app's functions (LoadFunctions).
	Functions []Function
	// RoutePrefix is host.json's extensions.http.routePrefix; "" means the
	// default, "api".
	RoutePrefix string

	mu    sync.Mutex
	hosts map[string]bool
}

// Forward makes requests to hostport (the handler's "host:port", as in the
// request URL) go through the host's rules.
func (t *Transport) Forward(hostport string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.hosts == nil {
		t.hosts = map[string]bool{}
	}
	t.hosts[strings.ToLower(hostport)] = true
}

// Stop undoes Forward.
func (t *Transport) Stop(hostport string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.hosts, strings.ToLower(hostport))
}

func (t *Transport) forwards(hostport string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hosts[strings.ToLower(hostport)]
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if !t.forwards(req.URL.Host) {
		return base.RoundTrip(req)
	}
	out, ok := t.Rewrite(req)
	if !ok {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return hostNotFound(req), nil
	}
	return base.RoundTrip(out)
}

// Rewrite returns the request the handler receives for req, or false when
// the host answers it itself (404: no function's route matches). req is not
// modified.
func (t *Transport) Rewrite(req *http.Request) (*http.Request, bool) {
	if t.ownCall(req) {
		return req, true
	}
	decoded := normalizePath(decodePath(req.URL.EscapedPath()))
	if _, ok := t.Match(req.Method, decoded); !ok {
		return nil, false
	}
	out := req.Clone(req.Context())
	p := forwardedPath(decoded)
	out.URL.Path, out.URL.RawPath = p, ""
	if unescaped, err := url.PathUnescape(p); err == nil {
		out.URL.Path, out.URL.RawPath = unescaped, p
	}
	out.URL.RawQuery = rebuildQuery(req.URL.RawQuery)
	if req.ContentLength <= 0 {
		// The host reads a body only when Content-Length says there is
		// one: a chunked body is not forwarded. The host keeps the
		// request's Transfer-Encoding header (facts/azure-functions.md);
		// this model cannot: Go's client sends an empty body without one.
		// The handler reads such a request as having no body either way.
		if req.Body != nil && req.Body != http.NoBody {
			_ = req.Body.Close()
		}
		out.Body, out.ContentLength, out.GetBody = http.NoBody, 0, nil
		out.TransferEncoding = nil
	}
	return out, true
}

// ownCall: the host's own requests to the handler, which no client can
// send through it: the readiness poll (GET /) and the invocation of a
// non-HTTP function (POST /<Name> with X-Azure-Functions-InvocationId).
func (t *Transport) ownCall(req *http.Request) bool {
	p := req.URL.EscapedPath()
	if req.Method == http.MethodGet && p == "/" {
		return true
	}
	if req.Method != http.MethodPost || req.Header.Get("X-Azure-Functions-InvocationId") == "" {
		return false
	}
	for _, fn := range t.Functions {
		if !fn.HTTP && p == "/"+fn.Name {
			return true
		}
	}
	return false
}

// Match returns the HTTP function whose route matches method and the
// decoded path, as the host's router does: the route prefix and the
// template's literal segments without regard to case, {name} one segment,
// {*name} the rest (possibly nothing), a trailing slash ignored, and the
// method one of the trigger's; of several, the most literal route.
func (t *Transport) Match(method, decodedPath string) (Function, bool) {
	prefix := t.RoutePrefix
	if prefix == "" {
		prefix = "api"
	}
	segs := splitSegments(decodedPath)
	best, bestRank, found := Function{}, 0, false
	for _, fn := range t.Functions {
		if !fn.HTTP || !methodAllowed(fn.Methods, method) {
			continue
		}
		route := fn.Route
		if route == "" {
			route = fn.Name
		}
		tmpl := splitSegments(prefix + "/" + route)
		if !matchTemplate(tmpl, segs) {
			continue
		}
		// Route precedence: literal segments before {name} before {*rest}.
		if r := rank(tmpl); !found || r < bestRank {
			best, bestRank, found = fn, r, true
		}
	}
	return best, found
}

func rank(tmpl []string) int {
	r := 0
	for _, s := range tmpl {
		switch {
		case strings.HasPrefix(s, "{*"):
			r += 100
		case strings.HasPrefix(s, "{"):
			r++
		}
	}
	return r
}

func methodAllowed(methods []string, m string) bool {
	if len(methods) == 0 {
		return true
	}
	for _, a := range methods {
		if strings.EqualFold(a, m) {
			return true
		}
	}
	return false
}

// splitSegments splits a path into its segments, ignoring a leading and a
// trailing slash (the router ignores a trailing slash).
func splitSegments(p string) []string {
	p = strings.TrimPrefix(p, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func matchTemplate(tmpl, segs []string) bool {
	for i, ts := range tmpl {
		if strings.HasPrefix(ts, "{*") && strings.HasSuffix(ts, "}") {
			return true // catch-all: the rest, even nothing
		}
		if i >= len(segs) {
			return false
		}
		if strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}") {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if !strings.EqualFold(ts, segs[i]) {
			return false
		}
	}
	return len(tmpl) == len(segs)
}

// decodePath is ASP.NET Core's (Kestrel's) decoding of the request path:
// every percent escape is decoded except %2F, which stays escaped so a
// path segment cannot be split by it; a malformed escape stays as sent.
func decodePath(escaped string) string {
	var b strings.Builder
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c == '%' && i+2 < len(escaped) && isHex(escaped[i+1]) && isHex(escaped[i+2]) {
			v := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			if v == '/' {
				b.WriteString(escaped[i : i+3])
			} else {
				b.WriteByte(v)
			}
			i += 2
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// normalizePath removes "." and ".." segments, as Kestrel does after
// decoding (and .NET's Uri again when the host rebuilds the URL).
func normalizePath(p string) string {
	if p == "" {
		return "/"
	}
	in := strings.Split(p, "/")
	out := make([]string, 0, len(in))
	for i, s := range in {
		switch s {
		case ".":
			if i == len(in)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(in)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

// forwardedPath is new Uri(request.GetDisplayUrl()).AbsolutePath: the
// decoded path read back as a URI. A "?" starts the query and a "#" the
// fragment, so both cut the path (what follows is lost: the forwarded
// query is the original one, rebuilt); "\" becomes "/"; dot segments are
// removed again; characters a URI path cannot hold are escaped again.
func forwardedPath(decoded string) string {
	if i := strings.IndexAny(decoded, "?#"); i >= 0 {
		decoded = decoded[:i]
	}
	decoded = normalizePath(strings.ReplaceAll(decoded, `\`, "/"))
	var b strings.Builder
	for i := 0; i < len(decoded); i++ {
		c := decoded[i]
		switch {
		case c == '%' && i+2 < len(decoded) && isHex(decoded[i+1]) && isHex(decoded[i+2]):
			b.WriteByte(c) // an escape sequence (%2F, or a decoded %25 followed by hex)
		case isPathChar(c):
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// isPathChar: RFC 3986 pchar plus "/", without "%".
func isPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

// rebuildQuery is the host's query string: parsed into a dictionary whose
// keys ignore case (the first spelling is kept), a repeated key's values
// joined with commas, and encoded again.
func rebuildQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type entry struct {
		key    string
		values []string
	}
	var order []*entry
	byKey := map[string]*entry{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, v = formDecode(k), formDecode(v)
		e := byKey[strings.ToLower(k)]
		if e == nil {
			e = &entry{key: k}
			byKey[strings.ToLower(k)] = e
			order = append(order, e)
		}
		e.values = append(e.values, v)
	}
	parts := make([]string, 0, len(order))
	for _, e := range order {
		parts = append(parts, url.QueryEscape(e.key)+"="+url.QueryEscape(strings.Join(e.values, ",")))
	}
	return strings.Join(parts, "&")
}

// formDecode decodes a query component: "+" is a space, a malformed escape
// stays as sent.
func formDecode(s string) string {
	s = strings.ReplaceAll(s, "+", " ")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// HostNotFoundHeader marks the host's own 404, so a test can tell it from
// the handler's.
const HostNotFoundHeader = "X-Hosttest-Host-Not-Found"

// hostNotFound is the host's answer to a request no function matches: a
// 404 with no body, which the handler never sees.
func hostNotFound(req *http.Request) *http.Response {
	return &http.Response{
		Status: "404 Not Found", StatusCode: http.StatusNotFound,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{HostNotFoundHeader: {"1"}, "Content-Length": {"0"}},
		Body:          io.NopCloser(strings.NewReader("")),
		ContentLength: 0,
		Request:       req,
	}
}
