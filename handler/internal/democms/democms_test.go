package democms

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// fakeConnector answers the CMS API like the connector would for one
// pending connect started by startedBy, and records every call.
type fakeConnector struct {
	mu        sync.Mutex
	calls     []string
	startedBy string
	spent     bool
}

func (f *fakeConnector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+" "+string(body))
	w.Header().Set("Content-Type", "application/json")
	user, isComplete := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/api/connections/"), "/complete")
	switch {
	case r.Method == http.MethodGet:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"not_connected","message":"no connection"}`)
	case isComplete && f.spent:
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_connect_code","message":"unknown, used or expired"}`)
	case isComplete && user != f.startedBy:
		f.spent = true
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":"user_mismatch","message":"started by another user"}`)
	case isComplete:
		f.spent = true
		io.WriteString(w, `{"user_id":"`+user+`","status":"connected","account":{"email":"ada@contoso.com","display_name":"Ada Lovelace"}}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":"not_found","message":"?"}`)
	}
}

func (f *fakeConnector) completions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, "POST ") && strings.Contains(c, "/complete ") {
			out = append(out, c)
		}
	}
	return out
}

type demoBrowser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newDemo(t *testing.T, startedBy string) (*fakeConnector, *demoBrowser) {
	t.Helper()
	fc := &fakeConnector{startedBy: startedBy}
	conn := httptest.NewServer(fc)
	t.Cleanup(conn.Close)
	demo := httptest.NewServer(New(Options{ConnectorURL: conn.URL, CMSKey: "k"}))
	t.Cleanup(demo.Close)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return fc, &demoBrowser{t: t, base: demo.URL, c: &http.Client{Jar: jar}}
}

func (b *demoBrowser) login(user string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+"/login", url.Values{"user": {user}})
	if err != nil {
		b.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("login as %s: %d", user, resp.StatusCode)
	}
}

// get follows redirects and returns the final page.
func (b *demoBrowser) get(path string) string {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	return string(page)
}

// TestReturnCompletesForTheSessionUser: the return page completes with the
// logged-in user's id, whatever user the URL names.
func TestReturnCompletesForTheSessionUser(t *testing.T) {
	fc, b := newDemo(t, "mara")
	b.login("victor")
	page := b.get(ReturnPath + "?microsoft=signed_in&connect_code=c0de&user=mara&user_id=mara")
	got := fc.completions()
	want := []string{`POST /api/connections/victor/complete {"connect_code":"c0de"}`}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("completions = %q, want %q", got, want)
	}
	if !strings.Contains(page, `data-outcome="user_mismatch"`) || !strings.Contains(page, "started by another MEGDocs user") ||
		!strings.Contains(page, "Nothing was connected") {
		t.Errorf("the page does not say the sign-in was started by another user:\n%s", page)
	}
	// The message is shown once (a reload shows the plain page).
	if page := b.get("/"); strings.Contains(page, `id="banner"`) {
		t.Errorf("the message shows again on the next page")
	}
}

func TestReturnOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name, login, query, outcome, text string
		completions                       int
	}{
		{"connected", "mara", "microsoft=signed_in&connect_code=c0de", "connected", "Connected as Ada Lovelace (ada@contoso.com).", 1},
		{"not logged in", "", "microsoft=signed_in&connect_code=c0de", "not_logged_in", "not connected to anyone", 0},
		{"cancelled", "mara", "microsoft=error&reason=access_denied", "error", "You cancelled", 0},
		{"unknown reason", "mara", "microsoft=error&reason=something_new", "error", "Microsoft is not responding", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, b := newDemo(t, "mara")
			if tc.login != "" {
				b.login(tc.login)
			}
			page := b.get(ReturnPath + "?" + tc.query)
			if !strings.Contains(page, `data-outcome="`+tc.outcome+`"`) || !strings.Contains(page, tc.text) {
				t.Errorf("page lacks outcome %q / %q:\n%s", tc.outcome, tc.text, page)
			}
			if got := fc.completions(); len(got) != tc.completions {
				t.Errorf("completions = %q, want %d", got, tc.completions)
			}
		})
	}
}

// TestSpentCode: a second visit of the same return URL says the sign-in
// was used; it does not claim a connection.
func TestSpentCode(t *testing.T) {
	_, b := newDemo(t, "mara")
	b.login("mara")
	b.get(ReturnPath + "?microsoft=signed_in&connect_code=c0de")
	page := b.get(ReturnPath + "?microsoft=signed_in&connect_code=c0de")
	if !strings.Contains(page, `data-outcome="invalid_connect_code"`) || !strings.Contains(page, "expired or was already used") {
		t.Errorf("second return:\n%s", page)
	}
}

func TestLoginSwitch(t *testing.T) {
	_, b := newDemo(t, "mara")
	if page := b.get("/"); !strings.Contains(page, "Not logged in.") || strings.Contains(page, `id="connect"`) {
		t.Errorf("a new browser is logged in:\n%s", page)
	}
	for _, user := range Users {
		b.login(user)
		if page := b.get("/"); !strings.Contains(page, `<span id="logged-in-as" class="me">`+user+`</span>`) {
			t.Errorf("after logging in as %s the page says:\n%s", user, page)
		}
	}
	resp, err := b.c.PostForm(b.base+"/login", url.Values{"user": {"mallory"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("login as an unknown user: %d, want 400", resp.StatusCode)
	}
	// Actions without a session call nothing for anyone.
	fc, anon := newDemo(t, "mara")
	for _, path := range []string{"/connect", "/token", "/disconnect"} {
		resp, err := anon.c.PostForm(anon.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), "Log in first") {
			t.Errorf("%s without a session: %s", path, page)
		}
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.calls) != 0 {
		t.Errorf("calls without a session: %q", fc.calls)
	}
}
