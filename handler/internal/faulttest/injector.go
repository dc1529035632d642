// Package faulttest breaks the connector's dependencies on purpose. Its
// Injector is an http.RoundTripper placed in the handler's one outgoing
// *http.Client: it tells Microsoft, Table Storage and Key Vault apart by the
// request's host and, following the rules a test installs, answers in their
// place (a status, a malformed or huge body), holds a request until the
// client gives up, resets the connection before or after the dependency
// acted, or lets the request through. The tests beside it drive the whole
// product (app.Serve, real Azurite, the devidp stand-in, a Key Vault
// stand-in) through those faults and check the contract's statuses and that
// no connection and no rotated refresh token is lost; crash_test.go kills
// the real handler binary in the middle of a sweep.
//
// Test tooling only: nothing in the deployed handler imports it.
package faulttest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Dependency is the service a request goes to.
type Dependency string

// The dependencies of the handler's outgoing client.
const (
	Microsoft Dependency = "microsoft" // identity platform and Graph
	Tables    Dependency = "tables"    // Azure Table Storage
	KeyVault  Dependency = "keyvault"  // Azure Key Vault
	Queues    Dependency = "queues"    // Azure Queue Storage (webhook deliveries)
	Unknown   Dependency = "unknown"   // a host no Route names
)

// Injector is an http.RoundTripper that injects faults into the requests
// of chosen dependencies and sends every other request to its base
// transport. It is safe for concurrent use.
type Injector struct {
	base http.RoundTripper

	mu       sync.Mutex
	hosts    map[string]Dependency // host:port
	rules    []*Rule
	counts   map[Dependency]int
	released chan struct{} // closed by Clear: held requests give up
}

// New returns an Injector sending what it does not intercept to base.
func New(base http.RoundTripper) *Injector {
	return &Injector{base: base, hosts: map[string]Dependency{}, counts: map[Dependency]int{}, released: make(chan struct{})}
}

// Route makes requests to rawURL's host (and port) count as d.
func (in *Injector) Route(rawURL string, d Dependency) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("faulttest: route %q: not an absolute URL", rawURL)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.hosts[hostPort(u)] = d
	return nil
}

// Add installs r after the rules already installed and returns it. For each
// request the first rule that matches and still has injections left decides.
func (in *Injector) Add(r *Rule) *Rule {
	if r.Fault == nil {
		panic("faulttest: rule without a fault")
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	r.in = in
	in.rules = append(in.rules, r)
	return r
}

// Clear removes every rule and releases the requests a Hang holds (they
// fail as if the connection dropped).
func (in *Injector) Clear() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.rules = nil
	close(in.released)
	in.released = make(chan struct{})
}

// Requests counts the requests seen for d, injected or not (the Azure SDK's
// retries each count).
func (in *Injector) Requests(d Dependency) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.counts[d]
}

// Dependency returns which dependency req goes to.
func (in *Injector) Dependency(req *http.Request) Dependency {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.dependencyLocked(req)
}

func (in *Injector) dependencyLocked(req *http.Request) Dependency {
	if d, ok := in.hosts[hostPort(req.URL)]; ok {
		return d
	}
	return Unknown
}

// RoundTrip implements http.RoundTripper.
func (in *Injector) RoundTrip(req *http.Request) (*http.Response, error) {
	in.mu.Lock()
	d := in.dependencyLocked(req)
	in.counts[d]++
	var fault Fault
	for _, r := range in.rules {
		if r.Dependency != "" && r.Dependency != d {
			continue
		}
		if r.Match != nil && !r.Match(req) {
			continue
		}
		r.matched++
		if r.matched <= r.After || (r.Times > 0 && r.injected >= r.Times) {
			continue
		}
		r.injected++
		fault = r.Fault
		break
	}
	released := in.released
	in.mu.Unlock()
	if fault == nil {
		return in.base.RoundTrip(req)
	}
	c := &Call{Request: req, Dependency: d, next: in.base, released: released}
	resp, err := fault(c)
	if !c.forwarded && req.Body != nil {
		// A RoundTripper closes the request body, also when it never
		// sends it (the base transport does when it does).
		req.Body.Close()
	}
	return resp, err
}

// Rule says which requests get a fault.
type Rule struct {
	// Dependency limits the rule to one dependency; empty means any.
	Dependency Dependency
	// Match narrows the rule further; nil matches every request of the
	// dependency. It runs under the injector's lock: it must not block or
	// read the body.
	Match func(*http.Request) bool
	// After lets this many matching requests through before injecting
	// ("every write after the Nth").
	After int
	// Times bounds the injections; 0 means every matching request.
	Times int
	// Fault is what an injected request gets.
	Fault Fault

	in                *Injector
	matched, injected int
}

// Injected counts the requests this rule has injected its fault into (for
// a Pass rule: the matching requests it let through).
func (r *Rule) Injected() int {
	r.in.mu.Lock()
	defer r.in.mu.Unlock()
	return r.injected
}

// Call is one intercepted request, handed to its Fault.
type Call struct {
	Request    *http.Request
	Dependency Dependency

	next      http.RoundTripper
	released  <-chan struct{}
	forwarded bool
}

// Forward sends the request on to the dependency (at most once).
func (c *Call) Forward() (*http.Response, error) {
	if c.forwarded {
		return nil, fmt.Errorf("faulttest: %s %s forwarded twice", c.Request.Method, c.Request.URL.Redacted())
	}
	c.forwarded = true
	return c.next.RoundTrip(c.Request)
}

// Wait blocks until the client gives up on the request (its timeout or
// cancellation) or the injector is cleared, and returns the error the
// client would see.
func (c *Call) Wait() error {
	select {
	case <-c.Request.Context().Done():
		return c.Request.Context().Err()
	case <-c.released:
		return ConnReset()
	}
}

// Fault produces a request's outcome.
type Fault func(*Call) (*http.Response, error)

// ConnReset is the error a read on a connection the peer reset returns.
func ConnReset() error {
	return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
}

// Status answers in the dependency's place: status, headers and body; the
// request never reaches it.
func Status(status int, header http.Header, body []byte) Fault {
	return func(c *Call) (*http.Response, error) {
		return synthesize(c.Request, status, header, bytes.NewReader(body), int64(len(body))), nil
	}
}

// Pass lets the request through untouched: a rule with it counts the
// requests it matches (Rule.Injected) without changing them.
func Pass() Fault {
	return func(c *Call) (*http.Response, error) { return c.Forward() }
}

// Reset fails the request as a connection reset before the dependency saw
// it.
func Reset() Fault {
	return func(*Call) (*http.Response, error) { return nil, ConnReset() }
}

// ResetAfterForward lets the dependency act on the request, then loses its
// answer to a connection reset: the write happened, or Microsoft issued
// tokens, and the client cannot know.
func ResetAfterForward() Fault {
	return func(c *Call) (*http.Response, error) {
		resp, err := c.Forward()
		if err != nil {
			return nil, err
		}
		drain(resp)
		return nil, ConnReset()
	}
}

// Hang holds the request until the client gives up (its timeout) or the
// injector is cleared; the dependency never sees it.
func Hang() Fault {
	return func(c *Call) (*http.Response, error) { return nil, c.Wait() }
}

// HangAfterForward lets the dependency act, then withholds the answer until
// the client gives up.
func HangAfterForward() Fault {
	return func(c *Call) (*http.Response, error) {
		resp, err := c.Forward()
		if err != nil {
			return nil, err
		}
		drain(resp)
		return nil, c.Wait()
	}
}

// Before runs hook (another writer's change, say) and then forwards the
// request, so the dependency answers a state the client did not expect.
func Before(hook func(*http.Request)) Fault {
	return func(c *Call) (*http.Response, error) {
		hook(c.Request)
		return c.Forward()
	}
}

// Rewrite forwards the request and replaces the answer's body with
// edit(body) (at most 16 MiB of the original is read).
func Rewrite(edit func(status int, body []byte) []byte) Fault {
	return func(c *Call) (*http.Response, error) {
		resp, err := c.Forward()
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return nil, err
		}
		body = edit(resp.StatusCode, body)
		h := resp.Header.Clone()
		h.Del("Content-Length")
		return synthesize(c.Request, resp.StatusCode, h, bytes.NewReader(body), int64(len(body))), nil
	}
}

// Large answers status with a body of size bytes of filler (generated as it
// is read, never held in memory) and adds the bytes the client read to
// read, so a test can see the client stopped early.
func Large(status int, header http.Header, size int64, read *atomic.Int64) Fault {
	return func(c *Call) (*http.Response, error) {
		body := &countingReader{r: io.LimitReader(filler{}, size), n: read}
		return synthesize(c.Request, status, header, body, size), nil
	}
}

// Truncated answers status and sends the first n bytes of body, then the
// connection resets in the middle of the answer.
func Truncated(status int, header http.Header, body []byte, n int) Fault {
	return func(c *Call) (*http.Response, error) {
		r := io.MultiReader(bytes.NewReader(body[:min(n, len(body))]), errReader{ConnReset()})
		return synthesize(c.Request, status, header, r, int64(len(body))), nil
	}
}

// Request predicates for Rule.Match.

// Methods matches requests with one of the methods.
func Methods(methods ...string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		return false
	}
}

// PathSuffix matches requests whose path ends with suffix.
func PathSuffix(suffix string) func(*http.Request) bool {
	return func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, suffix) }
}

// TokenEndpoint matches the identity platform's token endpoint.
func TokenEndpoint() func(*http.Request) bool { return PathSuffix("/oauth2/v2.0/token") }

// Entity matches requests on one entity of table (path
// ".../<table>(PartitionKey='...',RowKey='...')") with one of the methods
// (none: any). Table Storage's Get is GET, the connector's Update is PUT.
func Entity(table string, methods ...string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/"+table+"(PartitionKey=") {
			return false
		}
		return len(methods) == 0 || Methods(methods...)(r)
	}
}

// TableWrites matches every write to table: inserts, updates, merges and
// deletes of its entities.
func TableWrites(table string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		switch r.Method {
		case http.MethodPost:
			p := r.URL.Path
			return strings.HasSuffix(p, "/"+table) || strings.HasSuffix(p, "/"+table+"()")
		case http.MethodPut, http.MethodPatch, http.MethodDelete, "MERGE":
			return Entity(table)(r)
		}
		return false
	}
}

// SecretReads matches Key Vault secret reads that carry a token (the SDK's
// first, token-less request only fetches the authentication challenge).
func SecretReads(names ...string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		if r.Method != http.MethodGet || r.Header.Get("Authorization") == "" || !strings.HasPrefix(r.URL.Path, "/secrets/") {
			return false
		}
		if len(names) == 0 {
			return true
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/secrets/"), "/")
		for _, n := range names {
			if n == name {
				return true
			}
		}
		return false
	}
}

// All matches when every predicate does.
func All(preds ...func(*http.Request) bool) func(*http.Request) bool {
	return func(r *http.Request) bool {
		for _, p := range preds {
			if !p(r) {
				return false
			}
		}
		return true
	}
}

func synthesize(req *http.Request, status int, header http.Header, body io.Reader, length int64) *http.Response {
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", status, http.StatusText(status)),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(body),
		ContentLength: length,
		Request:       req,
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
}

func hostPort(u *url.URL) string {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return strings.ToLower(net.JoinHostPort(host, port))
}

// filler is an endless stream of 'a': the start of no valid JSON.
type filler struct{}

func (filler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n != nil {
		c.n.Add(int64(n))
	}
	return n, err
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
