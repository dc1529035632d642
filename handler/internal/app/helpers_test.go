package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/hosttest"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// transportEnv selects how these contract tests reach the handler:
// "direct", "via-host" (through hosttest's model of the Functions host,
// which rewrites each request as the host does before forwarding it), or
// unset for both: the binary runs every test directly, then runs itself
// again via the host. Every test that starts a stack is covered both ways.
const transportEnv = "APP_TEST_TRANSPORT"

// viaHost is the host model while the tests run via the host, else nil.
var viaHost *hosttest.Transport

func TestMain(m *testing.M) {
	switch mode := os.Getenv(transportEnv); mode {
	case "direct":
	case "via-host":
		fns, err := hosttest.LoadFunctions("../../../functions")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		// noRedirect, every browser and every request made with do()
		// now go through the host model; it rewrites only requests to
		// a stack's handler (startWith) and passes the rest.
		viaHost = &hosttest.Transport{Base: http.DefaultTransport, Functions: fns}
		noRedirect.Transport = viaHost
	case "":
		code := azurite.RunTests(m)
		if listingOrFuzzing() {
			os.Exit(code) // nothing to run twice (make fuzz reads -list's output)
		}
		if again := runAgain("via-host"); again != 0 {
			code = again
		}
		os.Exit(code)
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want direct, via-host or nothing (both)\n", transportEnv, mode)
		os.Exit(2)
	}
	os.Exit(azurite.RunTests(m))
}

// listingOrFuzzing: the binary ran with -test.list or -test.fuzz (read
// after m.Run, which parses the flags).
func listingOrFuzzing() bool {
	for _, name := range []string{"test.list", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// runAgain runs this test binary once more, with the same flags, in the
// given transport mode, and returns its exit code.
func runAgain(mode string) int {
	var args []string
	for _, a := range os.Args[1:] {
		// Files the go command reads back once per binary run.
		if strings.HasPrefix(a, "-test.testlogfile") || strings.HasPrefix(a, "-test.coverprofile") {
			continue
		}
		args = append(args, a)
	}
	fmt.Printf("=== %s=%s: the same tests again, through the host's rewriting\n", transportEnv, mode)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), transportEnv+"="+mode)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type stack struct {
	*devstack.Stack
	logs *logtest.Buffer
}

// start runs the whole product on free ports with its own Azurite (so a
// listing sees only this test's connections).
func start(t *testing.T, settings map[string]string) *stack {
	t.Helper()
	return startWith(t, 0, nil, settings)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	return m
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	if _, ok := m["message"].(string); !ok {
		t.Errorf("error body has no message: %s", r.body)
	}
	code, _ := m["error"].(string)
	return code
}

var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t *testing.T, c *http.Client, method, u, key string, body []byte) response {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if viaHost != nil && c.Transport == nil {
		cc := *c
		cc.Transport = viaHost
		c = &cc
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

// cms calls the CMS API with the right key.
func (s *stack) cms(t *testing.T, method, path string, body any) response {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	return do(t, noRedirect, method, s.HandlerURL+path, s.CMSKey, b)
}

const returnURL = "http://localhost/settings/?tab=microsoft"

// session creates a connect session and returns its connect_url.
func (s *stack) session(t *testing.T, userID string) string {
	t.Helper()
	r := s.cms(t, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": userID, "return_url": returnURL})
	if r.status != http.StatusCreated {
		t.Fatalf("connect-sessions: %d %s", r.status, r.body)
	}
	return r.json(t)["connect_url"].(string)
}

// browser is a user agent with a cookie jar that does not follow redirects.
type browser struct {
	*http.Client
}

func newBrowser(t *testing.T) browser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	return browser{&http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: noRedirect.CheckRedirect, Transport: noRedirect.Transport}}
}

// begin opens the connect link and returns Microsoft's authorize URL.
func (b browser) begin(t *testing.T, connectURL string) *url.URL {
	t.Helper()
	r := do(t, b.Client, http.MethodGet, connectURL, "", nil)
	if r.status != http.StatusFound {
		t.Fatalf("GET connect_url: %d %s", r.status, r.body)
	}
	u, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// signIn runs the browser's half of a v2 connect for userID, signing in
// at the stand-in as account ("" cancels): connect session, connect link,
// sign-in, callback. It returns where the callback sent the browser:
// return_url with microsoft=signed_in&connect_code=... (or
// microsoft=error&reason=...). Nothing is connected yet.
func (s *stack) signIn(t *testing.T, userID, account string) *url.URL {
	t.Helper()
	b := newBrowser(t)
	auth := b.begin(t, s.session(t, userID))
	cb, err := s.IDP.SignIn(context.Background(), nil, auth.String(), account)
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, b.Client, http.MethodGet, cb.String(), "", nil)
	if r.status != http.StatusFound {
		t.Fatalf("callback: %d %s", r.status, r.body)
	}
	u, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// connectCode is the connect code on the callback's redirect; the test
// fails unless the redirect says microsoft=signed_in.
func connectCode(t *testing.T, back *url.URL) string {
	t.Helper()
	q := back.Query()
	if q.Get("microsoft") != "signed_in" || q.Get("connect_code") == "" {
		t.Fatalf("callback sent the browser to %s, want microsoft=signed_in&connect_code=...", back)
	}
	return q.Get("connect_code")
}

// complete is the CMS's POST /api/connections/{userID}/complete.
func (s *stack) complete(t *testing.T, userID, code string) response {
	t.Helper()
	return s.cms(t, http.MethodPost, "/api/connections/"+url.PathEscape(userID)+"/complete", map[string]string{"connect_code": code})
}

// connect runs the whole v2 connect for userID as account: signIn, then
// the CMS completes it for the same user, as its return page does for the
// user logged in in that browser. It fails the test unless the completion
// answers 200, and returns the status object it answered.
func (s *stack) connect(t *testing.T, userID, account string) map[string]any {
	t.Helper()
	back := s.signIn(t, userID, account)
	r := s.complete(t, userID, connectCode(t, back))
	if r.status != http.StatusOK {
		t.Fatalf("complete %q as %s: %d %s", userID, account, r.status, r.body)
	}
	return r.json(t)
}
