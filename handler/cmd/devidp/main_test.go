package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunServesOnLoopbackUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	env := map[string]string{"MICROSOFT_CLIENT_ID": "cid-from-env", "DEVIDP_IDENTITY_HEADER": "h", "DEVIDP_ISSUER_BASE": "https://login.partner.microsoftonline.cn"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-expires-in", "2m"}, func(k string) string { return env[k] }, pw)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the first log line: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var raw map[string]any
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		t.Fatalf("first line %q is not JSON: %v", line, err)
	}
	if raw["event"] != "devidp_listening" || raw["client_id"] != "cid-from-env" || !strings.HasPrefix(raw["url"].(string), "http://127.0.0.1:") {
		t.Fatalf("listening line = %s", line)
	}
	base := raw["url"].(string)

	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(base + "/devidp/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		ExpiresIn int `json:"expires_in"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || st.ExpiresIn != 120 {
		t.Fatalf("status = %d %+v %v", resp.StatusCode, st, err)
	}
	req, _ := http.NewRequest(http.MethodGet, raw["identity_endpoint"].(string)+"?api-version=2019-08-01&resource=api://AzureADTokenExchange", nil)
	req.Header.Set("X-IDENTITY-HEADER", "h")
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("identity endpoint = %d, want 200 with the header from the environment", resp.StatusCode)
	}

	resp, err = hc.Get(base + "/common/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Issuer != "https://login.partner.microsoftonline.cn/{tenantid}/v2.0" {
		t.Errorf("discovery issuer = %q (%v), want the one from DEVIDP_ISSUER_BASE", doc.Issuer, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunRefusesBadSettings(t *testing.T) {
	for _, args := range [][]string{
		{"-addr", "0.0.0.0:0"},
		{"-addr", "192.0.2.1:0"},
		{"-addr", "nonsense"},
		{"-addr", "127.0.0.1:0", "-expires-in", "soon"},
		{"-addr", "127.0.0.1:0", "-issuer-base", "login.partner.microsoftonline.cn"},
		{"-addr", "127.0.0.1:0", "-issuer-base", "https://login.microsoftonline.com/common"},
		{"-unknown-flag"},
	} {
		err := run(context.Background(), args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), "devidp: ") {
			t.Errorf("run(%v) = %v, want a devidp error", args, err)
		}
	}
}
