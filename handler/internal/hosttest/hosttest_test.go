package hosttest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// functions mirrors the repository's functions/*/function.json.
var functions = []Function{
	{Name: "callback", HTTP: true, Route: "callback", Methods: []string{"GET"}},
	{Name: "connect", HTTP: true, Route: "connect", Methods: []string{"GET"}},
	{Name: "connect-sessions", HTTP: true, Route: "connect-sessions", Methods: []string{"POST"}},
	{Name: "connection", HTTP: true, Route: "connections/{*rest}", Methods: []string{"GET", "DELETE", "POST"}},
	{Name: "connections", HTTP: true, Route: "connections", Methods: []string{"GET"}},
	{Name: "one", HTTP: true, Route: "things/{id}", Methods: []string{"GET"}},
	{Name: "refresh"},
}

func TestLoadFunctionsReadsTheRepository(t *testing.T) {
	fns, err := LoadFunctions("../../../functions")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Function{}
	for _, fn := range fns {
		byName[fn.Name] = fn
	}
	if fn := byName["connection"]; !fn.HTTP || fn.Route != "connections/{*rest}" || strings.Join(fn.Methods, ",") != "GET,DELETE,POST" {
		t.Errorf("connection = %+v", fn)
	}
	if fn, ok := byName["refresh"]; !ok || fn.HTTP {
		t.Errorf("refresh = %+v, want a non-HTTP function", fn)
	}
	if _, err := LoadFunctions(t.TempDir()); err == nil {
		t.Error("an empty folder loaded without error")
	}
}

func TestDecodePath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/api/connections/a%3Fb", "/api/connections/a?b"},
		{"/api/connections/a%23b", "/api/connections/a#b"},
		{"/api/connections/a%5Cb", `/api/connections/a\b`},
		{"/api/connections/a%2Fb", "/api/connections/a%2Fb"},
		{"/api/connections/a%2fb", "/api/connections/a%2fb"},
		{"/api/connections/%41%25", "/api/connections/A%"},
		{"/api/connections/%zz%4", "/api/connections/%zz%4"},
		{"/api/connections/%C3%A9", "/api/connections/é"},
	} {
		if got := decodePath(tt.in); got != tt.want {
			t.Errorf("decodePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestForwardedPath(t *testing.T) {
	for _, tt := range []struct{ decoded, want string }{
		{"/api/connections/u1/token", "/api/connections/u1/token"},
		{"/api/connections/a?b/token", "/api/connections/a"},
		{"/api/connections/a#b/token", "/api/connections/a"},
		{`/api/connections/a\b`, "/api/connections/a/b"},
		{`/api/connections/x\..\..\connect`, "/api/connect"},
		{"/api/connections/a%2Fb", "/api/connections/a%2Fb"},
		{"/api/connections/A%", "/api/connections/A%25"},
		{"/api/connections/%41", "/api/connections/%41"},
		{"/api/connections/a b", "/api/connections/a%20b"},
		{"/api/connections/é", "/api/connections/%C3%A9"},
		{"/api/connections/ada@contoso.com~_-.", "/api/connections/ada@contoso.com~_-."},
	} {
		if got := forwardedPath(tt.decoded); got != tt.want {
			t.Errorf("forwardedPath(%q) = %q, want %q", tt.decoded, got, tt.want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/api/./connect", "/api/connect"},
		{"/api/x/../connect", "/api/connect"},
		{"/../../api/connect", "/api/connect"},
		{"/api/connections/u1/..", "/api/connections/"},
		{"/api//connect", "/api//connect"},
		{"/", "/"},
	} {
		if got := normalizePath(tt.in); got != tt.want {
			t.Errorf("normalizePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRebuildQuery(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"status=connected&limit=5", "status=connected&limit=5"},
		{"status=a&status=b", "status=a%2Cb"},
		{"session=x&session=y", "session=x%2Cy"},
		{"Status=a&status=b", "Status=a%2Cb"},
		{"a=1&b=2&a=3", "a=1%2C3&b=2"},
		{"q=a+b%20c&r=%2B", "q=a+b+c&r=%2B"},
		{"flag&x=", "flag=&x="},
		{"&&x=1&", "x=1"},
	} {
		got := rebuildQuery(tt.in)
		if got != tt.want {
			t.Errorf("rebuildQuery(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// What the handler reads back: one value, comma-joined.
	q, _ := url.ParseQuery(rebuildQuery("status=a&status=b"))
	if len(q["status"]) != 1 || q.Get("status") != "a,b" {
		t.Errorf("handler reads %v", q)
	}
}

func TestMatch(t *testing.T) {
	tr := &Transport{Functions: functions}
	for _, tt := range []struct {
		method, path, want string // want "" = the host's 404
	}{
		{"GET", "/api/connect", "connect"},
		{"GET", "/API/Connect", "connect"},
		{"GET", "/api/connect/", "connect"},
		{"POST", "/api/connect", ""},
		{"GET", "/api/connect/x", ""},
		{"GET", "/api/connections", "connections"},
		{"DELETE", "/api/connections", "connection"}, // the catch-all takes an empty rest
		{"GET", "/api/connections/u1", "connection"},
		{"POST", "/api/connections/u1/token", "connection"},
		{"PUT", "/api/connections/u1", ""},
		{"GET", "/api/connections/a?b/c", "connection"},
		{"GET", "/api/things/1", "one"},
		{"GET", "/api/things", ""},
		{"GET", "/api/things/1/2", ""},
		{"GET", "/connect", ""},
		{"POST", "/refresh", ""},
		{"GET", "/api/refresh", ""},
		{"GET", "/", ""},
	} {
		fn, ok := tr.Match(tt.method, tt.path)
		if tt.want == "" && ok {
			t.Errorf("%s %s matched %s, want the host's 404", tt.method, tt.path, fn.Name)
		}
		if tt.want != "" && (!ok || fn.Name != tt.want) {
			t.Errorf("%s %s matched %q (%t), want %s", tt.method, tt.path, fn.Name, ok, tt.want)
		}
	}
	if _, ok := (&Transport{Functions: functions, RoutePrefix: "v1"}).Match("GET", "/v1/connect"); !ok {
		t.Error("a custom route prefix is not used")
	}
}

// seen records what the handler received.
type seen struct {
	mu   sync.Mutex
	reqs []received
}

type received struct {
	method, escapedPath, rawQuery, body string
	contentLength                       int64
}

func (s *seen) last(t *testing.T) received {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("the handler received nothing")
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func newHandler(t *testing.T) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, received{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(b), r.ContentLength})
		s.mu.Unlock()
		w.WriteHeader(299)
	}))
	t.Cleanup(srv.Close)
	return srv, s
}

func TestTransportForwardsLikeTheHost(t *testing.T) {
	srv, got := newHandler(t)
	tr := &Transport{Functions: functions}
	host := strings.TrimPrefix(srv.URL, "http://")
	tr.Forward(host)
	c := &http.Client{Transport: tr}
	send := func(method, target string, body io.Reader) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+target, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	send("GET", "/API/Connections/a%3Fb/token?state=x&state=y", nil)
	if r := got.last(t); r.escapedPath != "/API/Connections/a" || r.rawQuery != "state=x%2Cy" {
		t.Errorf("handler got %s ?%s", r.escapedPath, r.rawQuery)
	}
	send("DELETE", "/api/connections/a%2Fb", nil)
	if r := got.last(t); r.escapedPath != "/api/connections/a%2Fb" {
		t.Errorf("%%2F: handler got %s", r.escapedPath)
	}
	send("GET", "/api/connections/x%5C..%5C..%5Cconnect", nil)
	if r := got.last(t); r.escapedPath != "/api/connect" {
		t.Errorf(`%%5C: handler got %s`, r.escapedPath)
	}

	// A body with a Content-Length is forwarded; a chunked one is not.
	send("POST", "/api/connect-sessions", strings.NewReader(`{"user_id":"u1"}`))
	if r := got.last(t); r.body != `{"user_id":"u1"}` {
		t.Errorf("body with Content-Length: handler got %q", r.body)
	}
	send("POST", "/api/connect-sessions", io.MultiReader(strings.NewReader(`{"user_id":"u1"}`))) // unknown length: chunked
	if r := got.last(t); r.body != "" || r.contentLength > 0 {
		t.Errorf("chunked body: handler got %q (Content-Length %d)", r.body, r.contentLength)
	}

	// No function matches: the host answers 404 itself.
	n := got.count()
	for _, target := range []string{"/favicon.ico", "/api/nope", "/refresh", "/api/connect/x"} {
		if resp := send("GET", target, nil); resp.StatusCode != 404 || resp.Header.Get(HostNotFoundHeader) == "" {
			t.Errorf("GET %s: %d, want the host's 404", target, resp.StatusCode)
		}
	}
	if resp := send("PUT", "/api/connections/u1", nil); resp.StatusCode != 404 {
		t.Errorf("PUT: %d, want the host's 404 (no function takes PUT)", resp.StatusCode)
	}
	if got.count() != n {
		t.Errorf("the handler saw %d requests no function matches", got.count()-n)
	}

	// The host's own calls pass as they are.
	send("GET", "/", nil)
	if r := got.last(t); r.escapedPath != "/" {
		t.Errorf("readiness poll: %s", r.escapedPath)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/refresh", strings.NewReader(`{"Data":{}}`))
	req.Header.Set("X-Azure-Functions-InvocationId", "inv-1")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 299 {
		t.Fatalf("timer invocation: %v %v", resp, err)
	}
	if r := got.last(t); r.escapedPath != "/refresh" || r.body != `{"Data":{}}` {
		t.Errorf("timer invocation: %+v", r)
	}
}

func TestTransportLeavesOtherHostsAlone(t *testing.T) {
	srv, got := newHandler(t)
	tr := &Transport{Functions: functions} // Forward never called
	c := &http.Client{Transport: tr}
	resp, err := c.Get(srv.URL + "/anything%3F?a=1&a=2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := got.last(t); resp.StatusCode != 299 || r.escapedPath != "/anything%3F" || r.rawQuery != "a=1&a=2" {
		t.Errorf("other host: %d, %+v", resp.StatusCode, r)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	tr.Forward(host)
	tr.Stop(host)
	if resp, err := c.Get(srv.URL + "/anything"); err != nil || resp.StatusCode != 299 {
		t.Errorf("after Stop: %v %v", resp, err)
	}
}
