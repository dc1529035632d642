// Package app is the composition root: it reads the configuration, builds
// every client with one injected *http.Client, wires the packages together
// and serves. It starts listening before it touches Key Vault, Table Storage
// or Microsoft (the host polls GET / for readiness), and it never exits on
// a missing setting: the routes that need it answer 503 not_configured.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/funchost"
	"github.com/megdocs/msconnector/handler/internal/httpapi"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/sweep"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// Run serves until ctx is done. It returns an error only when it cannot
// listen or serve; the caller exits non-zero so the host restarts it.
func Run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	log := zerolog.New(stdout).With().Timestamp().Logger()
	cfg := config.Load(getenv)

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", cfg.Port))
	if err != nil {
		return fmt.Errorf("listen on 127.0.0.1:%s: %w", cfg.Port, err)
	}
	return Serve(ctx, ln, cfg, Deps{Getenv: getenv, Log: log})
}

// httpServer is the handler's server with its timeouts.
func httpServer(cfg config.Config, h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// The host answers the client within 230 s; it waits for the
		// timer's answer until functionTimeout + 1 minute (host.json).
		WriteTimeout: cfg.WriteTimeout(),
		IdleTimeout:  2 * time.Minute,
	}
}

// functionTimeout is host.json's functionTimeout for the log.
func functionTimeout(h config.Host) string {
	if h.Unbounded {
		return "unbounded"
	}
	return h.FunctionTimeout.String()
}

// Deps are the seams tests and the local stack replace.
type Deps struct {
	Getenv func(string) string
	Log    zerolog.Logger
	// HTTPClient for Microsoft, Key Vault, Table Storage and the webhook.
	HTTPClient *http.Client
	// Credential for Key Vault, Table Storage and the managed-identity
	// client assertion; DefaultAzureCredential when nil.
	Credential azcore.TokenCredential
	Now        func() time.Time
}

// Serve wires everything and serves on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, cfg config.Config, d Deps) error {
	log := d.Log
	if len(cfg.Problems) > 0 {
		arr := zerolog.Arr()
		for _, p := range cfg.Problems {
			arr.Str(p.String())
		}
		log.Error().Str("event", "configuration_incomplete").Array("problems", arr).
			Msg("some settings are missing or malformed; the routes that need them answer 503 not_configured until they are fixed and the app restarts")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.HTTPClient == nil {
		d.HTTPClient = NewHTTPClient()
	}

	srv, closeFn := build(cfg, d)
	defer closeFn()

	hs := httpServer(cfg, srv.Handler())
	log.Info().Str("event", "listening").Str("addr", ln.Addr().String()).
		Str("function_timeout", functionTimeout(cfg.Host)).Str("host_json", cfg.Host.Source).Msg("custom handler ready")
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info().Str("event", "stopped").Msg("custom handler stopped")
	return nil
}

// NewHTTPClient is the one client every outgoing call uses: bounded dial,
// TLS and response times (http.DefaultClient has none).
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = 20 * time.Second
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// build wires the packages. Pieces whose settings are missing stay nil;
// httpapi answers 503 for the routes that need them.
func build(cfg config.Config, d Deps) (*httpapi.Server, func()) {
	log := d.Log
	srv := &httpapi.Server{Config: cfg, Log: log, Now: d.Now, Events: connection.NopPublisher{}}
	closers := []func(){}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}

	cred := d.Credential
	lazyCred := func() (azcore.TokenCredential, error) {
		if cred != nil {
			return cred, nil
		}
		c, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
			ClientOptions: azcore.ClientOptions{Transport: d.HTTPClient},
		})
		if err != nil {
			return nil, err
		}
		cred = c
		return cred, nil
	}

	// Secrets: Key Vault in Azure, the environment locally.
	var src secrets.Source
	if cfg.KeyVaultURL != "" {
		c, err := lazyCred()
		if err == nil {
			src, err = secrets.NewKeyVault(cfg.KeyVaultURL, c, secrets.KeyVaultOptions{
				TTL: cfg.SecretsCacheTTL, Now: d.Now, Transport: d.HTTPClient, Logger: log,
			})
		}
		if err != nil {
			log.Error().Str("event", "not_configured").Err(err).Msg("cannot use KEY_VAULT_URL")
		}
	} else {
		log.Warn().Str("event", "secrets_from_environment").Msg("KEY_VAULT_URL is not set: secrets come from environment variables (local development only)")
		src = secrets.NewEnv(d.Getenv)
	}
	if src == nil {
		return srv, closeAll
	}
	srv.Keys = func(ctx context.Context) (string, string, error) {
		cur, err := src.Get(ctx, secrets.CMSAPIKey)
		if err != nil {
			return "", "", err
		}
		// The previous key is optional: only while rotating.
		prev, err := src.Get(ctx, secrets.CMSAPIKeyPrevious)
		if err != nil {
			return cur.Value, "", nil
		}
		return cur.Value, prev.Value, nil
	}
	diag := newDiagnostics(cfg, d, src)
	srv.Diagnostics = diag

	if len(cfg.Missing(config.AreaStorage)) > 0 {
		return srv, closeAll
	}
	sealer := sealing.New(sealing.NewSecretKeyring(src))
	svc, err := tableService(cfg, d, lazyCred)
	if err != nil {
		log.Error().Str("event", "not_configured").Err(err).Msg("cannot build the Table Storage client")
		return srv, closeAll
	}
	store := tablestore.New(svc, sealer, tablestore.Options{Now: d.Now})
	srv.Store = store
	diag.Tables = store

	var pub connection.Publisher = connection.NopPublisher{}
	if cfg.WebhookURL != "" && len(cfg.Missing(config.AreaWebhook)) == 0 {
		if p, h, err := webhook(cfg, d, src, lazyCred); err != nil {
			log.Error().Str("event", "not_configured").Err(err).Msg("cannot use the webhook delivery queue")
		} else {
			pub, srv.Webhook = p, h
		}
	}
	srv.Events = pub

	if len(cfg.Missing(config.AreaMicrosoft)) > 0 {
		return srv, closeAll
	}
	ms, err := microsoft(cfg, d, src)
	if err != nil {
		log.Error().Str("event", "not_configured").Err(err).Msg("cannot build the Microsoft client")
		return srv, closeAll
	}
	diag.Credential = ms
	allow, err := connectflow.NewAllowlist(cfg.AllowedReturnURLs)
	if err != nil {
		log.Error().Str("event", "not_configured").Err(err).Msg("ALLOWED_RETURN_URLS")
		return srv, closeAll
	}
	srv.Flow = &connectflow.Service{
		Store: store, Pending: store, Identity: ms, Allowlist: allow,
		Events: pub, PublicBaseURL: cfg.PublicBaseURL, Log: log, Now: d.Now,
	}
	tok := &tokens.Service{Store: store, Refresher: ms, Events: pub, Policy: cfg.Policy, Log: log, Now: d.Now}
	srv.Tokens = tok
	sw := &sweep.Sweeper{
		Store: store, Pending: store, Tokens: tok, Policy: cfg.Policy,
		Concurrency: cfg.RefreshConcurrency, Deadline: cfg.RefreshDeadline,
		Housekeeping: expiryReminder(src, store, log, d.Now),
		Log:          log, Now: d.Now,
	}
	sw.Record, sw.RequiredScopes = store.RecordSweep, cfg.Scopes
	srv.Refresh = funchost.TimerHandler("timer", func(ctx context.Context, inv funchost.Invocation, _ funchost.TimerInfo) (any, []string, error) {
		// Every line of this run carries its invocation_id (funchost puts
		// that logger in ctx).
		run := *sw
		run.Log = *zerolog.Ctx(ctx)
		sum, err := run.Run(ctx)
		logs := []string{fmt.Sprintf("refresh sweep: due=%d refreshed=%d reconnect_required=%d transient_failures=%d skipped=%d", sum.Due, sum.Refreshed, sum.ReconnectRequired, sum.TransientFailures, sum.Skipped)}
		return sum, logs, err
	})
	return srv, closeAll
}

func tableService(cfg config.Config, d Deps, lazyCred func() (azcore.TokenCredential, error)) (*aztables.ServiceClient, error) {
	opts := &aztables.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: d.HTTPClient, Retry: policy.RetryOptions{MaxRetries: 2}}}
	if cfg.TablesConnectionString != "" {
		return aztables.NewServiceClientFromConnectionString(cfg.TablesConnectionString, opts)
	}
	c, err := lazyCred()
	if err != nil {
		return nil, err
	}
	return aztables.NewServiceClient(cfg.TablesEndpoint, c, opts)
}
