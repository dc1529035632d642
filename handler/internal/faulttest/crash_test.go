package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/logtest"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// The real handler binary is SIGKILLed in the middle of a sweep of 1,000 due
// connections, restarted, and swept again. Nothing may be lost: every row
// decrypts, none is marked reconnect_required, each holds the newest refresh
// token of its sign-in or an older one Microsoft still accepts, the second
// sweep refreshes exactly the rows the first did not store, and afterwards
// every connection serves a token.
func TestCrashInTheMiddleOfASweep(t *testing.T) {
	const (
		n        = 1000
		accounts = 25 // each signs in n/accounts times: one grant per connection
		killAt   = 300
	)
	tables, _ := tablesFor(t)
	began := time.Now()
	bin := buildHandler(t)
	t.Logf("built the handler binary in %v", time.Since(began).Round(time.Millisecond))
	logs := &logtest.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("handler logs:\n%s", tail(logs.String(), 100))
		}
	})

	callback := "http://localhost:7071/api/callback" // no connect flow runs here
	clientSecret := randomString(32)
	idp, err := devidp.New(devidp.Config{ClientID: clientID, ClientSecret: clientSecret, RedirectURL: callback, Accounts: testAccounts(accounts), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	// The test seeds through devidp directly; the handler reaches it
	// through a loopback proxy that holds each answer back a little after
	// devidp issued the tokens (so a kill also lands between "Microsoft
	// rotated" and "the row was written") and that triggers the kill.
	seedSrv := httptest.NewServer(idp)
	t.Cleanup(seedSrv.Close)
	var answered atomic.Int64
	killNow, killed := make(chan struct{}), make(chan struct{})
	idpSrv := httptest.NewServer(answerLate(idp, 20*time.Millisecond, func(status int) {
		if status != http.StatusOK || answered.Add(1) != killAt {
			return
		}
		// The killAt-th new refresh token: kill the handler before it
		// gets the answer.
		close(killNow)
		select {
		case <-killed:
		case <-time.After(30 * time.Second):
		}
	}))
	t.Cleanup(idpSrv.Close)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(killed) }) }
	t.Cleanup(release) // before idpSrv.Close: it waits for the held answer
	encKey := make([]byte, sealing.KeySize)
	_, _ = rand.Read(encKey)
	env := map[string]string{
		"TABLES_CONNECTION_STRING":     tables,
		"MICROSOFT_CLIENT_ID":          clientID,
		"MICROSOFT_OAUTH_CALLBACK_URL": callback,
		"MICROSOFT_AUTHORITY_HOST":     idpSrv.URL,
		"MICROSOFT_GRAPH_URL":          idpSrv.URL,
		"MICROSOFT_CLIENT_AUTH":        config.ClientAuthSecret,
		"ALLOWED_RETURN_URLS":          "http://localhost/",
		"REFRESH_CONCURRENCY":          "16",
		secrets.EnvClientSecret:        clientSecret,
		secrets.EnvCMSAPIKey:           randomString(32),
		secrets.EnvEncryptionKey:       base64.StdEncoding.EncodeToString(encKey),
	}

	svc, err := aztables.NewServiceClientFromConnectionString(tables, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(mapEnv(env)))), tablestore.Options{Now: time.Now})
	hc := &http.Client{Timeout: 60 * time.Second}
	ms, err := msidentity.New(msidentity.Config{
		AuthorityHost: seedSrv.URL, ClientID: clientID, RedirectURL: callback, GraphURL: seedSrv.URL, Scopes: scopes, HTTPClient: hc, Now: time.Now,
		Credential: msidentity.NewSecretCredential(msidentity.SecretFunc(func(context.Context, string, bool) (string, error) { return clientSecret, nil })),
	})
	if err != nil {
		t.Fatal(err)
	}
	all := idp.Accounts()
	specs := make([]seedSpec, n)
	for i := range specs {
		specs[i] = seedSpec{userID: fmt.Sprintf("crash-%04d", i), account: all[i%accounts]}
	}
	began = time.Now()
	conns := seedConnections(t, idp, ms, store, hc, specs, time.Now())
	t.Logf("seeded %d due connections through devidp's code flow in %v", n, time.Since(began).Round(time.Millisecond))

	// Slow Microsoft down so the sweep takes seconds and the kill lands in
	// its middle.
	idp.SetLatency(20 * time.Millisecond)
	h := startChild(t, bin, env, logs)
	began = time.Now()
	base := idp.TokenRequests("refresh_token")
	type result struct {
		status int
		err    error
	}
	swept := make(chan result, 1)
	body := timerRequest(t)
	go func() {
		st, _, err := sweepRaw(h.url, body)
		swept <- result{st, err}
	}()
	select {
	case <-killNow:
	case r := <-swept:
		t.Fatalf("the sweep ended (%d, %v) before %d refreshes: nothing to kill", r.status, r.err, killAt)
	case <-time.After(90 * time.Second):
		t.Fatalf("only %d refreshes answered after 90 s", answered.Load())
	}
	h.kill(t)
	release()
	atKill := idp.TokenRequests("refresh_token") - base
	t.Logf("SIGKILL %v into the sweep", time.Since(began).Round(time.Millisecond))
	if r := <-swept; r.err == nil {
		t.Fatalf("the sweep answered %d although the handler was killed", r.status)
	}

	// After the kill.
	var refreshed, older, untouched int
	for _, c := range conns {
		got, k := storedIn(t, store, idp, c)
		switch {
		case k == keptOlderAccepted:
			older++ // Microsoft rotated; the kill came before the write
		case got.RefreshToken != c.seedRT:
			refreshed++
		default:
			untouched++
		}
	}
	t.Logf("killed after %d refresh requests reached devidp: %d rows refreshed and stored, %d hold an older refresh token Microsoft still accepts, %d untouched",
		atKill, refreshed, older, untouched)
	if refreshed == 0 || refreshed+older > killAt+16 {
		t.Errorf("%d rows refreshed before the kill, %d answers lost: the kill did not land mid-sweep", refreshed, older)
	}
	if older == 0 {
		// The killAt-th answer was held back until the kill.
		t.Error("no row holds an older token although an answer was lost in the kill")
	}

	// Restart and sweep again.
	h = startChild(t, bin, env, logs)
	began = time.Now()
	st, out, err := sweepRaw(h.url, body)
	if err != nil || st != http.StatusOK {
		t.Fatalf("second sweep: %d %v %s", st, err, out)
	}
	sum := decodeSummary(t, out)
	t.Logf("second sweep (%v): %s", time.Since(began).Round(time.Millisecond), sum)
	if want := int64(n - refreshed); sum.Due != want || sum.Refreshed != want || sum.ReconnectRequired != 0 || sum.TransientFailures != 0 {
		t.Errorf("second sweep: %s; want due=refreshed=%d, no failures", sum, want)
	}

	// Every connection holds its sign-in's newest token and serves one.
	idp.SetLatency(0)
	for _, c := range conns {
		if _, k := storedIn(t, store, idp, c); k != keptNewest {
			t.Errorf("%s: after the second sweep the row holds %s", c.userID, k)
		}
	}
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := make(chan *conn)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				if st, b, err := tokenRaw(h.url, env[secrets.EnvCMSAPIKey], c.userID); err != nil || st != http.StatusOK {
					if failed.Add(1) <= 5 {
						t.Errorf("token API for %s: %d %v %s", c.userID, st, err, b)
					}
				}
			}
		}()
	}
	for _, c := range conns {
		next <- c
	}
	close(next)
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d of %d connections could not serve a token", failed.Load(), n)
	}
}

// buildHandler builds ./handler (the binary Azure runs) into a temporary
// directory.
func buildHandler(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go command to build the handler")
		}
	}
	out := filepath.Join(t.TempDir(), "handler")
	cmd := exec.Command(goBin, "build", "-o", out, "./handler")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./handler: %v\n%s", err, b)
	}
	return out
}

// child is the handler binary running as a child process.
type child struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startChild runs the handler with env on a free port and waits until it
// answers GET /. The process is killed when t ends.
func startChild(t *testing.T, bin string, env map[string]string, logs io.Writer) *child {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin)
		cmd.Env = []string{"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port)}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd, url: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(c.done) }()
		t.Cleanup(func() { c.kill(t) })
		if c.waitReady() {
			return c
		}
		c.kill(t)
		if attempt == 3 {
			t.Fatal("the handler binary did not start (see its logs)")
		}
	}
}

func (c *child) waitReady() bool {
	hc := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case <-c.done:
			return false // exited (port taken?)
		default:
		}
		if resp, err := hc.Get(c.url + "/"); err == nil {
			resp.Body.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// kill sends SIGKILL (no shutdown, no deferred writes) and waits for the
// process to be gone.
func (c *child) kill(t *testing.T) {
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill handler: %v", err)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Error("the killed handler did not exit within 10 s")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sweepRaw fires the timer without failing the test (the handler may be
// killed under it).
func sweepRaw(base string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/refresh", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", randomString(12))
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1040.300.0")
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func tokenRaw(base, key, userID string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/connections/"+userID+"/token", nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// answerLate serves h, reports the status to after (which may hold the
// answer back further), then holds the answer back for d unless the client
// is gone by then: the work is done, the answer is in flight.
func answerLate(h http.Handler, d time.Duration, after func(status int)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		after(rec.Code)
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}
