package app

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/httpapi"
)

// Serve returns only once the background work has ended, and gives that
// work a bounded context.
func TestServeWaitsForTheBackgroundWork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Load(func(string) string { return "" })
	entered, release := make(chan time.Time, 1), make(chan struct{})
	w := &wiring{srv: &httpapi.Server{Config: cfg, Log: zerolog.Nop(), Now: time.Now}}
	w.stops = append(w.stops, func(ctx context.Context) error {
		dl, _ := ctx.Deadline()
		entered <- dl
		<-release
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, cfg, zerolog.Nop(), w) }()
	cancel()
	select {
	case dl := <-entered:
		if dl.IsZero() || time.Until(dl) > shutdownTimeout {
			t.Errorf("background work's deadline %v: want one within %v", dl, shutdownTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve never ended the background work")
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v while the background work was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

// build hands the token service's and the identity client's ends to
// Serve: after them, no refresh and no discovery fetch starts. Nothing
// here reaches the network: build makes no call.
func TestBuildStopsTheTokenService(t *testing.T) {
	settings := map[string]string{
		"TABLES_CONNECTION_STRING":     "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
		"MICROSOFT_CLIENT_ID":          "11111111-2222-3333-4444-555555555555",
		"MICROSOFT_OAUTH_CALLBACK_URL": "http://127.0.0.1:9/api/callback",
		"MICROSOFT_AUTHORITY_HOST":     "http://127.0.0.1:9",
		"MICROSOFT_GRAPH_URL":          "http://127.0.0.1:9",
		"MICROSOFT_CLIENT_SECRET":      "s",
		"TOKEN_ENCRYPTION_KEY":         "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		"CMS_API_KEY":                  "k",
		"ALLOWED_RETURN_URLS":          "http://localhost/",
	}
	env := func(k string) string { return settings[k] }
	w := build(config.Load(env), Deps{Getenv: env, Log: zerolog.Nop(), HTTPClient: NewHTTPClient(), Now: time.Now})
	if w.srv.Tokens == nil {
		t.Fatal("no token service was built")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.stop(ctx); err != nil {
		t.Fatalf("stop = %v", err)
	}
	if _, err := w.srv.Tokens.RefreshIfDue(ctx, "nobody"); err == nil || !strings.Contains(err.Error(), "tokens: closed") {
		t.Errorf("RefreshIfDue after stop = %v, want the closed service's error", err)
	}
	if _, err := w.srv.Flow.Identity.Exchange(ctx, "code", "verifier"); err == nil || !strings.Contains(err.Error(), "msidentity: closed") {
		t.Errorf("Exchange after stop = %v, want the closed client's error", err)
	}
	if r := w.srv.Diagnostics.Report(ctx); len(r.Checks) != 0 {
		t.Errorf("diagnostics after stop computed %d checks, want none", len(r.Checks))
	}
}

// With Key Vault, build hands its end to Serve too: after it, no read of
// Key Vault starts. Nothing here reaches the network: the read is refused
// before any request.
func TestBuildStopsKeyVault(t *testing.T) {
	settings := map[string]string{"KEY_VAULT_URL": "https://megdocs-test.vault.azure.net/"}
	env := func(k string) string { return settings[k] }
	w := build(config.Load(env), Deps{Getenv: env, Log: zerolog.Nop(), HTTPClient: NewHTTPClient(), Now: time.Now, Credential: &azfake.TokenCredential{}})
	if w.srv.Keys == nil {
		t.Fatal("no secrets source was built")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.stop(ctx); err != nil {
		t.Fatalf("stop = %v", err)
	}
	if _, _, err := w.srv.Keys(ctx); err == nil || !strings.Contains(err.Error(), "key vault: closed") {
		t.Errorf("reading the CMS key after stop = %v, want the closed Key Vault's error", err)
	}
}

// Serve refuses to run without a clock rather than choosing one.
func TestServeRequiresAClock(t *testing.T) {
	err := Serve(context.Background(), nil, config.Load(func(string) string { return "" }), Deps{Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), "Now") {
		t.Fatalf("Serve without Now = %v, want an error naming it", err)
	}
}
