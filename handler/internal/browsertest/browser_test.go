package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/democms"
	"github.com/megdocs/msconnector/handler/internal/devstack"
)

// SkipEnv is the one explicit opt-out: SKIP_BROWSER=1 skips the browser
// test. Without it a missing chromium fails: a browser test that silently
// skips proves nothing.
const SkipEnv = "SKIP_BROWSER"

// stepTimeout bounds one user action (a click and the page it leads to).
// Generous: the machine is small and shared. Nothing asserts on time.
const stepTimeout = 90 * time.Second

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

// TestNewcomerClickThrough is what `make run` tells a newcomer to try,
// clicked in a real browser: log in as a demo user, connect, see "Connected
// as ...", token, Graph /me, revoke, reconnect required, disconnect.
func TestNewcomerClickThrough(t *testing.T) {
	s, b := start(t, "normal")
	const (
		userID  = "mara"
		account = "ada@contoso.com"
		name    = "Ada Lovelace"
	)

	b.step("demo-page", func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(s.CMSURL+"/"))
		if err != nil {
			return err
		}
		return firstErr(
			wantStatus(resp, http.StatusOK),
			b.wantText(ctx, "#logged-in-as", "Not logged in."),
			b.wantText(ctx, "#login-mara", "mara"),
			b.wantText(ctx, "#login-victor", "victor"),
		)
	})

	b.step("logged-in-as-mara", func(ctx context.Context) error {
		return b.login(ctx, userID)
	})

	b.step("microsoft-sign-in", func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("connect")))
		if err != nil {
			return err
		}
		if err := wantStatus(resp, http.StatusOK); err != nil {
			return err
		}
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			return err
		}
		// The handler sent the browser to the stand-in's authorize page,
		// with the PKCE challenge and the registered redirect URI.
		u, err := url.Parse(loc)
		if err != nil {
			return err
		}
		q := u.Query()
		switch {
		case !strings.HasPrefix(loc, s.IdentityURL+"/common/oauth2/v2.0/authorize?"):
			return fmt.Errorf("after Connect the browser is at %s, want the stand-in's authorize page under %s", loc, s.IdentityURL)
		case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
			return fmt.Errorf("authorize URL without a PKCE S256 challenge: %s", loc)
		case q.Get("redirect_uri") != s.HandlerURL+"/api/callback":
			return fmt.Errorf("redirect_uri = %q, want %q", q.Get("redirect_uri"), s.HandlerURL+"/api/callback")
		}
		return chromedp.Do(ctx, chromedp.WaitVisible(accountButton(account)))
	})

	b.step("connected", func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, chromedp.Click(accountButton(account)))
		if err != nil {
			return err
		}
		// The callback sent the browser to the return page, which
		// completed the connect and showed the settings page.
		if back := b.returns(); len(back) != 1 || back[0].Query().Get("microsoft") != "signed_in" || back[0].Query().Get("connect_code") == "" {
			return fmt.Errorf("the browser came back to the demo through %v, want one %s?microsoft=signed_in&connect_code=...", back, democms.ReturnPath)
		}
		loc, err := chromedp.Run(ctx, chromedp.Location())
		if err != nil {
			return err
		}
		if loc != s.CMSURL+"/" {
			return fmt.Errorf("after sign-in the browser is at %s, want the demo page %s/ (the return page redirects, so a reload cannot send the code again)", loc, s.CMSURL)
		}
		if err := firstErr(
			wantStatus(resp, http.StatusOK),
			b.wantOutcome(ctx, "connected", "Connected as "+name+" ("+account+")."),
			b.wantText(ctx, "#logged-in-as", userID),
			b.wantText(ctx, "#status", "Connected"),
			b.wantText(ctx, "#account-email", account),
			b.wantText(ctx, "#account-name", name),
			b.wantText(ctx, "#connect", "Reconnect to Microsoft"),
		); err != nil {
			return err
		}
		expiry, err := b.text(ctx, "#token-expiry")
		if err != nil {
			return err
		}
		if _, err := time.Parse(time.RFC3339, expiry); err != nil {
			return fmt.Errorf("token expiry %q is not an RFC 3339 time: %v", expiry, err)
		}
		// The status list reads as a table: labels in one column, values
		// in another, each value on its label's row (a two-line label once
		// shifted every later value up a row).
		misplaced, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
			const dt = [...document.querySelectorAll('#status-card dt')];
			if (dt.length === 0) return 'no labels';
			for (const d of dt) {
				const v = d.nextElementSibling, a = d.getBoundingClientRect(), b = v.getBoundingClientRect();
				const d0 = dt[0].getBoundingClientRect(), v0 = dt[0].nextElementSibling.getBoundingClientRect();
				if (v.tagName !== 'DD' || a.top !== b.top || a.left !== d0.left || b.left !== v0.left || b.left < a.right)
					return d.textContent + ' / ' + v.textContent;
			}
			return '';
		})()`))
		if err != nil {
			return err
		}
		if misplaced != "" {
			return fmt.Errorf("the status list is out of line at %q", misplaced)
		}
		// The page shows what the connector stored, not a guess.
		return firstErr(
			wantAPIStatus(ctx, s, userID, http.StatusOK, "connected", account),
			wantAPIStatus(ctx, s, "victor", http.StatusNotFound, "", ""),
		)
	})

	b.step("token", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("fetch-token"))); err != nil {
			return err
		}
		res, err := b.result(ctx)
		if err != nil {
			return err
		}
		fields := resultFields(res.text)
		if !res.ok || !strings.HasSuffix(fields["access_token"], "…") || fields["token_type"] != "Bearer" {
			return fmt.Errorf("Fetch token shows no access token (ok=%v):\n%s", res.ok, res.text)
		}
		exp, err := time.Parse(time.RFC3339, fields["expires_at"])
		if err != nil {
			return fmt.Errorf("expires_at %q is not an RFC 3339 time: %v\n%s", fields["expires_at"], err, res.text)
		}
		if !exp.After(time.Now()) {
			return fmt.Errorf("the fetched token expired at %s, before now", exp)
		}
		return nil
	})

	b.step("graph-me", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("call-me"))); err != nil {
			return err
		}
		res, err := b.result(ctx)
		if err != nil {
			return err
		}
		status, body, _ := strings.Cut(res.text, "\n")
		var me struct {
			DisplayName string `json:"displayName"`
			Mail        string `json:"mail"`
		}
		if status != "HTTP 200" || !res.ok {
			return fmt.Errorf("Graph /me: %s", res.text)
		}
		if err := json.Unmarshal([]byte(body), &me); err != nil {
			return fmt.Errorf("Graph /me body is not JSON: %v\n%s", err, body)
		}
		if me.Mail != account || me.DisplayName != name {
			return fmt.Errorf("Graph /me is %q <%s>, want %q <%s>", me.DisplayName, me.Mail, name, account)
		}
		return nil
	})

	var adminURL string
	b.step("stand-in-admin", func(ctx context.Context) error {
		href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("idp-admin"), "href"))
		if err != nil {
			return err
		}
		if adminURL = href.Value; adminURL != s.IdentityURL+"/devidp/" {
			return fmt.Errorf("the demo's stand-in link is %q, want %q", adminURL, s.IdentityURL+"/devidp/")
		}
		// The link opens a new tab; one tab is enough to follow it.
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(adminURL))
		if err != nil {
			return err
		}
		return firstErr(wantStatus(resp, http.StatusOK), chromedp.Do(ctx, chromedp.WaitVisible(revokeButton(account))))
	})

	b.step("revoked", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(revokeButton(account))); err != nil {
			return err
		}
		row, err := chromedp.Run(ctx, chromedp.Text(accountRow(account)))
		if err != nil {
			return err
		}
		if !strings.Contains(row, "revoked") {
			return fmt.Errorf("the stand-in does not show %s as revoked: %q", account, row)
		}
		return nil
	})

	b.step("reconnect-required", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(s.CMSURL+"/")); err != nil {
			return err
		}
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("fetch-token"))); err != nil {
			return err
		}
		res, err := b.result(ctx)
		if err != nil {
			return err
		}
		if res.ok || !strings.HasPrefix(res.text, "HTTP 409") || !strings.Contains(res.text, `"reconnect_required"`) {
			return fmt.Errorf("Fetch token after revocation shows (ok=%v):\n%s\nwant HTTP 409 reconnect_required", res.ok, res.text)
		}
		if err := firstErr(
			b.wantText(ctx, "#status", "Reconnect required"),
			b.wantText(ctx, "#account-email", account),
			b.wantText(ctx, "#connect", "Reconnect to Microsoft"),
		); err != nil {
			return err
		}
		lastErr, err := b.text(ctx, "#last-error")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(lastErr, "invalid_grant at ") {
			return fmt.Errorf("last error = %q, want invalid_grant at <time>", lastErr)
		}
		return wantAPIStatus(ctx, s, userID, http.StatusOK, "reconnect_required", account)
	})

	b.step("disconnected", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("disconnect"))); err != nil {
			return err
		}
		res, err := b.result(ctx)
		if err != nil {
			return err
		}
		if !res.ok || !strings.HasPrefix(res.text, "Disconnected") {
			return fmt.Errorf("Disconnect shows (ok=%v):\n%s", res.ok, res.text)
		}
		if err := firstErr(
			b.wantText(ctx, "#status", "Not connected"),
			b.wantText(ctx, "#connect", "Connect to Microsoft"),
		); err != nil {
			return err
		}
		return wantAPIStatus(ctx, s, userID, http.StatusNotFound, "", "")
	})
}

// TestLeakedConnectLink replays the attack contract v2 closes, in one
// browser: mara creates a connect link and, instead of following it, hands
// it to victor; victor (the same browser, switched to victor's login) opens
// it and signs in with his own Microsoft account. The return page completes
// for victor, the connector refuses (user_mismatch), the page says so, and
// nothing is connected for either user, not even when mara then tries to
// finish the same sign-in herself.
func TestLeakedConnectLink(t *testing.T) {
	s, b := start(t, "attack")
	const account = "grace@contoso.com"

	b.step("logged-in-as-mara", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(s.CMSURL+"/")); err != nil {
			return err
		}
		return b.login(ctx, "mara")
	})

	var link string
	b.step("connect-link-for-mara", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("connect-link-create"))); err != nil {
			return err
		}
		href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("connect-link"), "href"))
		if err != nil {
			return err
		}
		if link = href.Value; !strings.HasPrefix(link, s.HandlerURL+"/api/connect?session=") {
			return fmt.Errorf("the connect link is %q, want %s/api/connect?session=...", link, s.HandlerURL)
		}
		return nil
	})

	b.step("switched-to-victor", func(ctx context.Context) error {
		return b.login(ctx, "victor")
	})

	b.step("victor-opens-the-link", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(link)); err != nil {
			return err
		}
		return chromedp.Do(ctx, chromedp.WaitVisible(accountButton(account)))
	})

	b.step("victor-signed-in-nothing-connected", func(ctx context.Context) error {
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(accountButton(account))); err != nil {
			return err
		}
		if err := firstErr(
			b.wantOutcome(ctx, "user_mismatch", "This Microsoft sign-in was started by another MEGDocs user, not by you (victor). "+
				"Nothing was connected, neither to your account nor to theirs. If someone sent you a link to connect Microsoft, "+
				"do not use it: to connect your own Microsoft account, click Connect to Microsoft below."),
			b.wantText(ctx, "#logged-in-as", "victor"),
			b.wantText(ctx, "#status", "Not connected"),
		); err != nil {
			return err
		}
		return firstErr(
			wantAPIStatus(ctx, s, "victor", http.StatusNotFound, "", ""),
			wantAPIStatus(ctx, s, "mara", http.StatusNotFound, "", ""),
		)
	})

	// The sign-in is destroyed, not set aside: mara, who started it, cannot
	// finish it either, with the very return URL victor's browser got.
	b.step("mara-cannot-finish-it", func(ctx context.Context) error {
		back := b.returns()
		if len(back) != 1 || back[0].Query().Get("connect_code") == "" {
			return fmt.Errorf("return URLs seen: %v, want one with a connect_code", back)
		}
		if err := b.login(ctx, "mara"); err != nil {
			return err
		}
		if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(back[0].String())); err != nil {
			return err
		}
		return firstErr(
			b.wantOutcome(ctx, "invalid_connect_code", "This Microsoft sign-in has expired or was already used. Nothing was connected. Click Connect to Microsoft to start again."),
			b.wantText(ctx, "#status", "Not connected"),
			wantAPIStatus(ctx, s, "mara", http.StatusNotFound, "", ""),
			wantAPIStatus(ctx, s, "victor", http.StatusNotFound, "", ""),
		)
	})
}

// start brings up the local stack as `make run` does and a browser whose
// screenshots are named after the path (normal-01-..., attack-01-...).
func start(t *testing.T, path string) (*devstack.Stack, *browser) {
	t.Helper()
	bin := chromium(t)
	out := outputDir(t)
	t.Logf("screenshots and logs: %s/%s-*", out, path)
	s, err := devstack.Start(context.Background(), devstack.Options{
		TablesConnectionString: azurite.ForTest(t),
		// As `make run`: inside the 5-minute refresh margin, so every
		// Fetch token refreshes and a revocation shows at the next one.
		IdentityExpiresIn: 5 * time.Minute,
		Logs:              createFile(t, filepath.Join(out, path+"-stack.log")),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s, newBrowser(t, bin, out, path, s.CMSURL+democms.ReturnPath)
}

// chromium finds Debian's chromium, or fails (skips only with SKIP_BROWSER=1).
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: skipping the real-browser test", SkipEnv)
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("chromium not found on PATH or at /usr/bin/chromium: this test drives a real browser.\n"+
		"Run `make test-deps` (installs Debian's chromium; needs root) or `apt-get install chromium`; "+
		"%s=1 skips this test explicitly.", SkipEnv)
	return ""
}

var (
	outOnce sync.Once
	outDir  string
)

// outputDir is testoutput/browser/ at the repository root, emptied once per
// run (every test of the run adds its files), or a temporary folder when
// that is not writable.
func outputDir(t *testing.T) string {
	t.Helper()
	outOnce.Do(func() {
		if root, err := repoRoot(); err == nil {
			dir := filepath.Join(root, "testoutput", "browser")
			if os.RemoveAll(dir) == nil && os.MkdirAll(dir, 0o755) == nil {
				outDir = dir
			}
		}
	})
	if outDir == "" {
		return t.TempDir()
	}
	return outDir
}

// repoRoot is the folder holding go.mod, above the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("browsertest: go.mod not found above the working directory")
		}
		dir = parent
	}
}

func createFile(t *testing.T, path string) io.Writer {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// browser is one headless Chromium with one tab.
type browser struct {
	t      *testing.T
	tab    context.Context
	out    string
	prefix string
	n      int

	mu   sync.Mutex
	back []*url.URL // every document request to the demo's return page
}

// newBrowser starts Chromium; its screenshots are prefix-NN-step.png, and
// it records each visit of returnURL (the connect_code arrives there).
func newBrowser(t *testing.T, bin, out, prefix, returnURL string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("no-proxy-server", true),
		// Loopback only: any other host name fails to resolve, so nothing
		// in the browser (a stray link, a background fetch) leaves the
		// machine.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 900),
		chromedp.CombinedOutput(createFile(t, filepath.Join(out, prefix+"-chromium.log"))),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser on the tab's own context: a deadline on the first
	// action would end the whole browser with it.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("starting %s: %v (its output is in %s)", bin, err, filepath.Join(out, prefix+"-chromium.log"))
	}
	b := &browser{t: t, tab: tab, out: out, prefix: prefix}
	err := chromedp.Listen(tab, func(ev any) {
		e, ok := ev.(*network.EventRequestWillBeSent)
		if !ok || e.Type != network.ResourceTypeDocument || !strings.HasPrefix(e.Request.URL, returnURL+"?") {
			return
		}
		if u, err := url.Parse(e.Request.URL); err == nil {
			b.mu.Lock()
			b.back = append(b.back, u)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// returns are the return page URLs the browser has visited so far.
func (b *browser) returns() []*url.URL {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*url.URL(nil), b.back...)
}

// login clicks the demo's "Log in as" switch.
func (b *browser) login(ctx context.Context, user string) error {
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("login-"+user)))
	if err != nil {
		return err
	}
	return firstErr(wantStatus(resp, http.StatusOK), b.wantText(ctx, "#logged-in-as", user))
}

// wantOutcome checks the demo's one-shot message: its outcome and its
// exact words (they are what a person reads).
func (b *browser) wantOutcome(ctx context.Context, outcome, text string) error {
	got, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("banner"), "data-outcome"))
	if err != nil {
		return fmt.Errorf("reading #banner: %w", err)
	}
	if got.Value != outcome {
		msg, _ := b.text(ctx, "#banner")
		return fmt.Errorf("the page's outcome is %q (%q), want %q", got.Value, msg, outcome)
	}
	return b.wantText(ctx, "#banner", text)
}

// step runs one user action under its own deadline, then saves a
// screenshot of the page named after it, also when the step failed.
func (b *browser) step(name string, do func(ctx context.Context) error) {
	b.t.Helper()
	b.n++
	ctx, cancel := context.WithTimeout(b.tab, stepTimeout)
	err := do(ctx)
	cancel()
	file := fmt.Sprintf("%s-%02d-%s.png", b.prefix, b.n, name)
	if err != nil {
		file = fmt.Sprintf("%s-%02d-%s-FAILED.png", b.prefix, b.n, name)
	}
	shot := b.screenshot(file)
	if err != nil {
		b.t.Fatalf("step %d (%s): %v\nscreenshot: %s\npage:\n%s", b.n, name, err, shot, b.pageText())
	}
}

func (b *browser) screenshot(file string) string {
	ctx, cancel := context.WithTimeout(b.tab, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		b.t.Errorf("screenshot %s: %v", file, err)
		return ""
	}
	path := filepath.Join(b.out, file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", file, err)
		return ""
	}
	return path
}

// pageText is the page's URL and visible text, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.tab, 10*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return loc + "\n(no text: " + err.Error() + ")"
	}
	return loc + "\n" + text
}

func (b *browser) text(ctx context.Context, css string) (string, error) {
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", css, err)
	}
	return strings.TrimSpace(s), nil
}

func (b *browser) wantText(ctx context.Context, css, want string) error {
	got, err := b.text(ctx, css)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s shows %q, want %q", css, got, want)
	}
	return nil
}

type result struct {
	text string
	ok   bool
}

// result reads the demo's #result box and whether the demo judged it a
// success (data-ok).
func (b *browser) result(ctx context.Context) (result, error) {
	text, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("result")))
	if err != nil {
		return result{}, fmt.Errorf("reading #result: %w", err)
	}
	ok, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.ID("result"), "data-ok"))
	if err != nil {
		return result{}, fmt.Errorf("reading #result's data-ok: %w", err)
	}
	return result{text: strings.TrimSpace(text), ok: ok.Value == "true"}, nil
}

// resultFields parses the demo's "key: value" token lines.
func resultFields(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ": "); ok {
			m[k] = v
		}
	}
	return m
}

// accountButton is the stand-in sign-in page's button for one account.
func accountButton(upn string) chromedp.CSS {
	return chromedp.CSS(fmt.Sprintf(`button.acct[data-upn=%q]`, upn))
}

// accountRow is the stand-in admin page's table row of one account.
func accountRow(upn string) chromedp.Search {
	return chromedp.Search(fmt.Sprintf(`//tr[.//div[@class="upn" and text()=%q]]`, upn))
}

func revokeButton(upn string) chromedp.Search {
	return chromedp.Search(fmt.Sprintf(`//tr[.//div[@class="upn" and text()=%q]]//button[text()="Revoke"]`, upn))
}

func wantStatus(resp *network.Response, want int) error {
	if resp == nil {
		return errors.New("no document response")
	}
	if int(resp.Status) != want {
		return fmt.Errorf("%s answered %d, want %d", resp.URL, resp.Status, want)
	}
	return nil
}

// wantAPIStatus asks the connector itself, as the CMS would, what it
// stored for the user.
func wantAPIStatus(ctx context.Context, s *devstack.Stack, userID string, wantCode int, wantState, wantEmail string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.HandlerURL+"/api/connections/"+userID, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.CMSKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != wantCode {
		return fmt.Errorf("GET /api/connections/{user}: %d %s, want %d", resp.StatusCode, body, wantCode)
	}
	if wantCode != http.StatusOK {
		return nil
	}
	var c struct {
		UserID  string `json:"user_id"`
		Status  string `json:"status"`
		Account struct {
			Email string `json:"email"`
		} `json:"account"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return fmt.Errorf("GET /api/connections/{user}: %v: %s", err, body)
	}
	if c.UserID != userID || c.Status != wantState || c.Account.Email != wantEmail {
		return fmt.Errorf("the connector has user %q %s <%s>, want %q %s <%s>", c.UserID, c.Status, c.Account.Email, userID, wantState, wantEmail)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
