package cmsclienttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/pythontest"
)

// SkipEnv is the one explicit opt-out: SKIP_PYTHON=1 skips the Python
// client test. Without it a missing python3 or requests fails.
const SkipEnv = "SKIP_PYTHON"

// returnURL is what the test's CMS may return to (never visited).
const returnURL = "https://cms.megdocs.test/accounts/settings/?tab=microsoft"

func TestMain(m *testing.M) { os.Exit(azurite.RunTests(m)) }

// TestPythonClient runs docs/cms-client/test_client.py against the real
// handler: a connected user, a user Microsoft no longer accepts, a webhook
// delivery the handler really signed, and two signed-in connects left for
// the client to complete: one by its own user, one by another user.
func TestPythonClient(t *testing.T) {
	py := pythontest.Find(t, SkipEnv, "the Python client test", []string{"python3-requests"}, "requests")
	root := pythontest.RepoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	hooks := make(chan delivery, 16)
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case hooks <- delivery{body: body, header: r.Header.Clone()}:
		default: // the test reads only the first few
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recorder.Close)

	webhookSecret := randomHex(t, 32)
	logs := &bytes.Buffer{}
	s, err := devstack.Start(ctx, devstack.Options{
		TablesConnectionString: azurite.ForTest(t),
		WithoutCMS:             true,
		// Inside the refresh margin: every token call refreshes, so a
		// revoked account shows at once.
		IdentityExpiresIn: 5 * time.Minute,
		Logs:              logs,
		Settings: map[string]string{
			"ALLOWED_RETURN_URLS": "https://cms.megdocs.test/accounts/settings/",
			"CMS_WEBHOOK_URL":     recorder.URL + "/hooks/microsoft",
			"CMS_WEBHOOK_SECRET":  webhookSecret,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs)
		}
	})

	// Every character class contract v2 allows, "@" included (the client
	// must not mangle it).
	const connected, email = "python.ada_1~x@megdocs-test", "ada@contoso.com"
	const revoked, revokedEmail = "python-grace", "grace@contoso.com"
	connect(ctx, t, s, connected, email)
	connect(ctx, t, s, revoked, revokedEmail)
	const completeUser, mismatchStartedBy, mismatchOther = "python-complete", "python-mara", "python-victor"
	completeCode := signIn(ctx, t, s, completeUser, email)
	mismatchCode := signIn(ctx, t, s, mismatchStartedBy, revokedEmail)
	if err := s.IDP.RevokeAccount(oidOf(t, s, revokedEmail)); err != nil {
		t.Fatal(err)
	}
	if code, body := cms(ctx, t, s, http.MethodPost, "/api/connections/"+revoked+"/token", nil); code != http.StatusConflict {
		t.Fatalf("token after revocation: %d %s, want 409", code, body)
	}

	hook := waitHook(ctx, t, hooks, connected)
	bodyFile := filepath.Join(t.TempDir(), "webhook-body.json")
	if err := os.WriteFile(bodyFile, hook.body, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, py, "-B", filepath.Join("docs", "cms-client", "test_client.py"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"PYTHONDONTWRITEBYTECODE=1",
		"STRICT=1",
		"CONNECTOR_URL="+s.HandlerURL,
		"CMS_API_KEY="+s.CMSKey,
		"CONNECTED_USER_ID="+connected,
		"CONNECTED_EMAIL="+email,
		"RECONNECT_USER_ID="+revoked,
		"RETURN_URL="+returnURL,
		"COMPLETE_USER_ID="+completeUser,
		"COMPLETE_CODE="+completeCode,
		"COMPLETE_EMAIL="+email,
		"MISMATCH_STARTED_BY="+mismatchStartedBy,
		"MISMATCH_CODE="+mismatchCode,
		"MISMATCH_OTHER_USER="+mismatchOther,
		"WEBHOOK_SECRET="+webhookSecret,
		"WEBHOOK_BODY_FILE="+bodyFile,
		"WEBHOOK_SIGNATURE="+hook.header.Get("X-MEGDocs-Signature"),
		"WEBHOOK_DELIVERY="+hook.header.Get("X-MEGDocs-Delivery"),
	)
	out, err := cmd.CombinedOutput()
	t.Logf("%s %s:\n%s", py, strings.Join(cmd.Args[1:], " "), out)
	if err != nil {
		t.Fatalf("the Python client tests failed: %v", err)
	}
	if !bytes.Contains(out, []byte("\nOK")) || bytes.Contains(out, []byte("skipped")) {
		t.Fatalf("the Python client tests did not all run and pass")
	}

	// What the Python tests did reached the handler: the disconnects, and
	// the mismatch left nothing behind for either user.
	for _, user := range []string{connected, completeUser, mismatchStartedBy, mismatchOther} {
		if code, body := cms(ctx, t, s, http.MethodGet, "/api/connections/"+user, nil); code != http.StatusNotFound {
			t.Errorf("%s after the Python tests: %d %s, want 404", user, code, body)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"user_mismatch"`) {
		t.Errorf("no oauth_failed line with reason user_mismatch in the handler's log")
	}
}

type delivery struct {
	body   []byte
	header http.Header
}

// waitHook returns the connection.connected delivery for user. Delivery is
// asynchronous by contract; ctx bounds the wait.
func waitHook(ctx context.Context, t *testing.T, hooks <-chan delivery, user string) delivery {
	t.Helper()
	for {
		select {
		case d := <-hooks:
			var e struct {
				Type   string `json:"type"`
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(d.body, &e); err != nil {
				t.Fatalf("webhook body is not JSON: %v: %s", err, d.body)
			}
			if e.Type == "connection.connected" && e.UserID == user {
				return d
			}
		case <-ctx.Done():
			t.Fatalf("no connection.connected webhook for %q: %v", user, ctx.Err())
		}
	}
}

// connect does what the CMS and the user's browser do: create a connect
// session, open connect_url, sign in at the stand-in, follow the callback,
// and complete the connect for the same user.
func connect(ctx context.Context, t *testing.T, s *devstack.Stack, userID, account string) {
	t.Helper()
	code := signIn(ctx, t, s, userID, account)
	status, body := cms(ctx, t, s, http.MethodPost, "/api/connections/"+userID+"/complete", map[string]string{"connect_code": code})
	if status != http.StatusOK {
		t.Fatalf("complete for %s: %d %s, want 200", userID, status, body)
	}
}

// signIn creates a connect session for userID, signs account in at the
// stand-in and follows the callback, and returns the connect_code the
// callback put on the return URL, not yet completed.
func signIn(ctx context.Context, t *testing.T, s *devstack.Stack, userID, account string) string {
	t.Helper()
	code, body := cms(ctx, t, s, http.MethodPost, "/api/connect-sessions", map[string]string{"user_id": userID, "return_url": returnURL})
	if code != http.StatusCreated {
		t.Fatalf("connect-sessions: %d %s", code, body)
	}
	var session struct {
		ConnectURL string `json:"connect_url"`
	}
	if err := json.Unmarshal(body, &session); err != nil {
		t.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{
		Jar: jar, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	authorize := redirect(ctx, t, browser, session.ConnectURL)
	cb, err := s.IDP.SignIn(ctx, nil, authorize.String(), account)
	if err != nil {
		t.Fatal(err)
	}
	back := redirect(ctx, t, browser, cb.String())
	q := back.Query()
	if q.Get("microsoft") != "signed_in" || q.Get("connect_code") == "" || q.Get("tab") != "microsoft" || !strings.HasPrefix(back.String(), strings.Split(returnURL, "?")[0]) {
		t.Fatalf("callback sent the browser to %s, want %s with microsoft=signed_in and a connect_code", back, returnURL)
	}
	return q.Get("connect_code")
}

// redirect GETs u and returns where it redirects.
func redirect(ctx context.Context, t *testing.T, c *http.Client, u string) *url.URL {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("GET %s: %d %s, want a 302", u, resp.StatusCode, body)
	}
	return loc
}

// cms calls the connector's CMS API with the stack's key.
func cms(ctx context.Context, t *testing.T, s *devstack.Stack, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.HandlerURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.CMSKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

func oidOf(t *testing.T, s *devstack.Stack, upn string) string {
	t.Helper()
	for _, a := range s.IDP.Accounts() {
		if a.UserPrincipalName == upn {
			return a.OID
		}
	}
	t.Fatalf("the stand-in has no account %s", upn)
	return ""
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestDocEmbedsClient keeps docs/cms-integration.md's copy of the client
// equal to the file the Python tests exercise.
func TestDocEmbedsClient(t *testing.T) {
	root := pythontest.RepoRoot(t)
	client, err := os.ReadFile(filepath.Join(root, "docs", "cms-client", "megdocs_connector.py"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "cms-integration.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append(append([]byte("```python\n"), client...), "```\n"...)) {
		t.Errorf("docs/cms-integration.md does not embed docs/cms-client/megdocs_connector.py verbatim in a ```python block: copy the file into it again")
	}
}
