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
	"github.com/megdocs/msconnector/handler/internal/msidentity"
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
	return Serve(ctx, ln, cfg, Deps{Getenv: getenv, Log: log, Now: time.Now})
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
	// Now is the clock, required.
	Now func() time.Time
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
		// The one clock of every package: none of them falls back to
		// time.Now on its own.
		return errors.New("app: Deps.Now is required")
	}
	if d.HTTPClient == nil {
		d.HTTPClient = NewHTTPClient()
	}

	return serve(ctx, ln, cfg, log, build(cfg, d))
}

// serve serves w on ln until ctx is done, then ends the requests in flight
// and w's background work, all within shutdownTimeout.
func serve(ctx context.Context, ln net.Listener, cfg config.Config, log zerolog.Logger, w *wiring) error {
	hs := httpServer(cfg, w.srv.Handler())
	log.Info().Str("event", "listening").Str("addr", ln.Addr().String()).
		Str("function_timeout", functionTimeout(cfg.Host)).Str("host_json", cfg.Host.Source).Msg("custom handler ready")
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var err error
	select {
	case e := <-errc:
		err = fmt.Errorf("serve: %w", e)
	case <-ctx.Done():
	}
	// One bound for the whole shutdown: the requests in flight first, then
	// the background work they started (a stopped process loses it anyway).
	shutdown, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err == nil {
		err = drain(shutdown, hs, errc)
	}
	if stopErr := w.stop(shutdown); stopErr != nil {
		log.Warn().Str("event", "background_work_abandoned").Err(stopErr).Msg("background work did not end within the shutdown bound")
	}
	if err != nil {
		return err
	}
	log.Info().Str("event", "stopped").Msg("custom handler stopped")
	return nil
}

// drain stops hs from accepting and waits, within ctx, for the requests in
// flight; errc is hs.Serve's result.
func drain(ctx context.Context, hs *http.Server, errc <-chan error) error {
	if err := hs.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// shutdownTimeout bounds Serve's shutdown: the requests in flight and the
// background work they started.
const shutdownTimeout = 20 * time.Second

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

// wiring is what build made: the server, and the background work Serve
// ends on shutdown.
type wiring struct {
	srv *httpapi.Server
	// stops end the background work, each bounded by ctx, in reverse
	// order of building.
	stops []func(context.Context) error
}

// stop ends every piece's background work within ctx's bound.
func (w *wiring) stop(ctx context.Context) error {
	var errs []error
	for i := len(w.stops) - 1; i >= 0; i-- {
		errs = append(errs, w.stops[i](ctx))
	}
	return errors.Join(errs...)
}

// builder carries what every piece of build needs: the settings, the
// seams, the one credential (made on first use) and what is built so far.
type builder struct {
	cfg  config.Config
	d    Deps
	log  zerolog.Logger
	cred azcore.TokenCredential
	w    *wiring
	// recoverOutbox sends the webhook outbox's left-behind entries (the
	// sweep's housekeeping); nil without a webhook.
	recoverOutbox func(context.Context) (int, error)
}

// build wires the packages, one component at a time. Pieces whose settings
// are missing stay nil; httpapi answers 503 for the routes that need them.
func build(cfg config.Config, d Deps) *wiring {
	b := &builder{cfg: cfg, d: d, log: d.Log, cred: d.Credential,
		w: &wiring{srv: &httpapi.Server{Config: cfg, Log: d.Log, Now: d.Now, Events: connection.NopPublisher{}}}}
	src := b.secrets()
	if src == nil {
		return b.w
	}
	diag := newDiagnostics(cfg, d, src)
	b.w.srv.Diagnostics = diag
	// The diagnostics computation uses every other piece: it is stopped
	// first, whatever build returns after.
	defer func() { b.w.stops = append(b.w.stops, diag.Close) }()
	store := b.storage(src)
	if store == nil {
		return b.w
	}
	diag.Tables = store
	pub := b.events(src, store)
	ms := b.identity(src)
	if ms == nil {
		return b.w
	}
	diag.Credential = ms
	b.services(src, store, pub, ms)
	return b.w
}

// credential is the managed identity (or d.Credential) for Key Vault,
// Table Storage and Queue Storage, made on first use.
func (b *builder) credential() (azcore.TokenCredential, error) {
	if b.cred != nil {
		return b.cred, nil
	}
	c, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: b.d.HTTPClient},
	})
	if err != nil {
		return nil, err
	}
	b.cred = c
	return c, nil
}

// secrets is Key Vault in Azure, the environment locally; it also gives
// the server the CMS API keys. Nil when Key Vault cannot be used.
func (b *builder) secrets() secrets.Source {
	var src secrets.Source
	if b.cfg.KeyVaultURL != "" {
		c, err := b.credential()
		var kv *secrets.KeyVault
		if err == nil {
			kv, err = secrets.NewKeyVault(b.cfg.KeyVaultURL, c, secrets.KeyVaultOptions{
				TTL: b.cfg.SecretsCacheTTL, Now: b.d.Now, Transport: b.d.HTTPClient, Logger: b.log,
			})
		}
		if err != nil {
			b.log.Error().Str("event", "not_configured").Err(err).Msg("cannot use KEY_VAULT_URL")
			return nil
		}
		// Built first, so stopped last: every reader of secrets has
		// ended before its shared reads are cancelled.
		b.w.stops = append(b.w.stops, kv.Close)
		src = kv
	} else {
		b.log.Warn().Str("event", "secrets_from_environment").Msg("KEY_VAULT_URL is not set: secrets come from environment variables (local development only)")
		src = secrets.NewEnv(b.d.Getenv)
	}
	b.w.srv.Keys = func(ctx context.Context) (string, string, error) {
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
	return src
}

// storage is the sealed Table Storage store; nil when it cannot be built.
func (b *builder) storage(src secrets.Source) *tablestore.Store {
	if len(b.cfg.Missing(config.AreaStorage)) > 0 {
		return nil
	}
	svc, err := tableService(b.cfg, b.d, b.credential)
	if err != nil {
		b.log.Error().Str("event", "not_configured").Err(err).Msg("cannot build the Table Storage client")
		return nil
	}
	store := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(src)), tablestore.Options{Now: b.d.Now})
	b.w.srv.Store = store
	return store
}

// events is the webhook's publisher (and its queue-triggered delivery), or
// a publisher that drops events when no webhook is configured.
func (b *builder) events(src secrets.Source, store *tablestore.Store) connection.Publisher {
	var pub connection.Publisher = connection.NopPublisher{}
	if b.cfg.WebhookURL != "" && len(b.cfg.Missing(config.AreaWebhook)) == 0 {
		if p, h, err := webhook(b.cfg, b.d, src, b.credential, store); err != nil {
			b.log.Error().Str("event", "not_configured").Err(err).Msg("cannot use the webhook delivery queue")
		} else {
			pub, b.w.srv.Webhook, b.recoverOutbox = p, h, p.Recover
		}
	}
	b.w.srv.Events = pub
	return pub
}

// identity is the Microsoft client (whose discovery fetch Serve ends); nil
// when it cannot be built.
func (b *builder) identity(src secrets.Source) *msidentity.Client {
	if len(b.cfg.Missing(config.AreaMicrosoft)) > 0 {
		return nil
	}
	ms, err := microsoft(b.cfg, b.d, src)
	if err != nil {
		b.log.Error().Str("event", "not_configured").Err(err).Msg("cannot build the Microsoft client")
		return nil
	}
	b.w.stops = append(b.w.stops, ms.Close)
	return ms
}

// services are the connect flow, the token service (whose background work
// Serve ends) and the refresh sweep behind the timer.
func (b *builder) services(src secrets.Source, store *tablestore.Store, pub connection.Publisher, ms *msidentity.Client) {
	cfg, log, now := b.cfg, b.log, b.d.Now
	allow, err := connectflow.NewAllowlist(cfg.AllowedReturnURLs)
	if err != nil {
		log.Error().Str("event", "not_configured").Err(err).Msg("ALLOWED_RETURN_URLS")
		return
	}
	b.w.srv.Flow = &connectflow.Service{
		Store: store, Pending: store, Identity: ms, Allowlist: allow,
		Events: pub, PublicBaseURL: cfg.PublicBaseURL, Log: log, Now: now,
	}
	tok := &tokens.Service{Store: store, Refresher: ms, Events: pub, Policy: cfg.Policy, Log: log, Now: now}
	b.w.srv.Tokens = tok
	b.w.stops = append(b.w.stops, tok.Close)
	sw := &sweep.Sweeper{
		Store: store, Pending: store, Tokens: tok, Policy: cfg.Policy,
		Concurrency: cfg.RefreshConcurrency, Deadline: cfg.RefreshDeadline,
		Housekeeping: housekeeping(expiryReminder(src, store, log, now), b.recoverOutbox, log),
		Log:          log, Now: now,
	}
	sw.Record, sw.RequiredScopes = store.RecordSweep, cfg.Scopes
	b.w.srv.Refresh = funchost.TimerHandler("timer", func(ctx context.Context, inv funchost.Invocation, _ funchost.TimerInfo) (any, []string, error) {
		// Every line of this run carries its invocation_id (funchost puts
		// that logger in ctx).
		run := *sw
		run.Log = *zerolog.Ctx(ctx)
		sum, err := run.Run(ctx)
		logs := []string{fmt.Sprintf("refresh sweep: due=%d refreshed=%d reconnect_required=%d transient_failures=%d skipped=%d", sum.Due, sum.Refreshed, sum.ReconnectRequired, sum.TransientFailures, sum.Skipped)}
		return sum, logs, err
	})
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
