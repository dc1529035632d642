package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devstack"
)

// offsetClock is real time plus an offset a test advances (past the
// diagnostics' one-minute cache) instead of sleeping.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func noAz(t *testing.T) azFunc {
	return func(_ context.Context, args ...string) ([]byte, error) {
		t.Errorf("az called locally: %v", args)
		return nil, nil
	}
}

func verify(t *testing.T, args []string, getenv func(string) string, az azFunc) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"-wait", "0"}, args...), getenv, az, &http.Client{Timeout: 60 * time.Second}, &out, &errb)
	return code, out.String(), errb.String()
}

// TestVerifyAgainstTheLocalStack is the "done when": make verify
// against make run's stack prints every check and exits 0; an expired
// client secret planted at the stand-in turns microsoft_credential red with
// the fix, and the command exits non-zero. The demo page shows the same
// table.
func TestVerifyAgainstTheLocalStack(t *testing.T) {
	if os.Getenv("SKIP_AZURITE") == "1" {
		t.Skip("SKIP_AZURITE=1")
	}
	clk := &offsetClock{}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := s.Sweep(ctx); err != nil { // the host's timer
		t.Fatal(err)
	}
	local := env(map[string]string{"VERIFY_BASE_URL": s.HandlerURL, "CMS_API_KEY": s.CMSKey})

	code, out, errOut := verify(t, nil, local, noAz(t))
	if code != exitOK {
		t.Fatalf("exit %d on a healthy stack, want 0\n%s%s", code, out, errOut)
	}
	for _, name := range []string{"configuration", "secret:microsoft-client-secret", "secret:token-encryption-key", "secret:cms-api-key", "table_storage", "microsoft_credential", "timer", "connections"} {
		if !strings.Contains(out, "\n"+name+" ") {
			t.Errorf("output lacks the check %s:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "FIX") || !strings.Contains(out, "All 8 checks ok") {
		t.Errorf("output is not the table:\n%s", out)
	}
	for _, secret := range []string{s.CMSKey, s.Settings["MICROSOFT_CLIENT_SECRET"], s.Settings["TOKEN_ENCRYPTION_KEY"]} {
		if strings.Contains(out+errOut, secret) {
			t.Error("verify printed a secret")
		}
	}

	// The demo page links to the same table.
	page := get(t, s.CMSURL+"/")
	if !strings.Contains(page, `href="/diagnostics"`) {
		t.Error("the demo page has no diagnostics link")
	}
	table := get(t, s.CMSURL+"/diagnostics")
	if !strings.Contains(table, "microsoft_credential") || !strings.Contains(table, "All 8 checks ok") {
		t.Errorf("the demo's diagnostics page is not the table:\n%s", table)
	}

	// Plant an expired client secret at the stand-in.
	s.IDP.ExpireClientSecrets()
	clk.Advance(61 * time.Second) // past the one-minute cache
	code, out, errOut = verify(t, nil, local, noAz(t))
	if code != exitFailed {
		t.Fatalf("exit %d with an expired client secret, want %d\n%s%s", code, exitFailed, out, errOut)
	}
	t.Logf("make verify with an expired client secret:\n%s", out)
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "microsoft_credential ") {
			line = l
		}
	}
	for _, want := range []string{"FAIL", "AADSTS7000222", "Create a new client secret in the app registration"} {
		if !strings.Contains(line, want) {
			t.Errorf("microsoft_credential row lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "1 of 8 checks failed") {
		t.Errorf("no failure summary:\n%s", out)
	}

	// make run's file works the same, with nothing in the environment.
	file := filepath.Join(t.TempDir(), "verify.json")
	b, _ := json.Marshal(map[string]string{"base_url": s.HandlerURL, "cms_api_key": s.CMSKey})
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := verify(t, []string{"-verify-file", file}, env(nil), noAz(t)); code != exitFailed || !strings.Contains(out, "AADSTS7000222") {
		t.Errorf("with the verify file: exit %d\n%s%s", code, out, errOut)
	}

	// A wrong key is an error, not a report.
	wrong := env(map[string]string{"VERIFY_BASE_URL": s.HandlerURL, "CMS_API_KEY": "not-the-key"})
	if code, _, errOut := verify(t, nil, wrong, noAz(t)); code != exitError || !strings.Contains(errOut, "401") {
		t.Errorf("wrong key: exit %d, %s; want %d and the 401", code, errOut, exitError)
	}
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}

// Against Azure the key comes from `az keyvault secret show` (never from
// the command line or the screen) and the URL from the app's host name.
func TestVerifyAzureTarget(t *testing.T) {
	const key = "cms-key-from-the-vault"
	var calls [][]string
	az := func(_ context.Context, args ...string) ([]byte, error) {
		calls = append(calls, args)
		switch strings.Join(args[:2], " ") {
		case "keyvault secret":
			return []byte(key + "\n"), nil
		case "functionapp show":
			return []byte("megdocs-conn-abc123.azurewebsites.net\n"), nil
		}
		t.Errorf("unexpected az %v", args)
		return nil, nil
	}
	tg, err := resolve(context.Background(), "", "megdocs-conn", "rg-megdocs", "kv-megdocs", "", env(nil), az)
	if err != nil {
		t.Fatal(err)
	}
	if tg.url != "https://megdocs-conn-abc123.azurewebsites.net/api/diagnostics" || tg.key != key {
		t.Errorf("target = %s (key ok %v)", tg.url, tg.key == key)
	}
	if strings.Contains(tg.where, key) {
		t.Error("the printed target names the key")
	}
	wantKV := "keyvault secret show --vault-name kv-megdocs --name cms-api-key --query value --output tsv"
	if len(calls) != 2 || strings.Join(calls[0], " ") != wantKV || !strings.Contains(strings.Join(calls[1], " "), "--resource-group rg-megdocs --name megdocs-conn") {
		t.Errorf("az calls = %v", calls)
	}

	// Without a resource group: the default host name.
	calls = nil
	tg, err = resolve(context.Background(), "", "megdocs-conn", "", "kv-megdocs", "", env(nil), az)
	if err != nil || tg.url != "https://megdocs-conn.azurewebsites.net/api/diagnostics" || len(calls) != 1 {
		t.Errorf("no resource group: %v %s %v", err, tg.url, calls)
	}

	// An app without a vault cannot be verified.
	if _, err := resolve(context.Background(), "", "megdocs-conn", "", "", "", env(nil), az); err == nil {
		t.Error("FUNCTION_APP_NAME without KEY_VAULT_NAME: no error")
	}
}

// The secretless mode: the credential check sends the managed identity's
// assertion (the same credential as every refresh) and no client secret is
// checked or needed. One managed-identity stack per process (azidentity
// caches its tokens per process): this is the only one here.
func TestVerifySecretlessStack(t *testing.T) {
	if os.Getenv("SKIP_AZURITE") == "1" {
		t.Skip("SKIP_AZURITE=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	clk := &offsetClock{}
	s, err := devstack.Start(ctx, devstack.Options{WithoutCMS: true, ManagedIdentity: true, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := verify(t, nil, env(map[string]string{"VERIFY_BASE_URL": s.HandlerURL, "CMS_API_KEY": s.CMSKey}), noAz(t))
	if code != exitOK || !strings.Contains(out, "client auth managed_identity") || strings.Contains(out, "secret:microsoft-client-secret") {
		t.Errorf("exit %d:\n%s%s", code, out, errOut)
	}
	if s.IDP.ManagedIdentityRequests() == 0 || s.IDP.TokenRequests("client_credentials") != 1 {
		t.Errorf("managed identity tokens %d, client-credentials requests %d: the check did not use the assertion", s.IDP.ManagedIdentityRequests(), s.IDP.TokenRequests("client_credentials"))
	}

	// A broken federated credential turns the check red with its fix.
	s.IDP.RemoveFederatedCredential()
	clk.Advance(61 * time.Second)
	code, out, errOut = verify(t, nil, env(map[string]string{"VERIFY_BASE_URL": s.HandlerURL, "CMS_API_KEY": s.CMSKey}), noAz(t))
	if code != exitFailed || !strings.Contains(out, "AADSTS70021") || !strings.Contains(out, "Federated credentials") {
		t.Errorf("exit %d with the federated credential removed:\n%s%s", code, out, errOut)
	}
}
