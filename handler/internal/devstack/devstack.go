// Package devstack runs the whole product locally with no Azure account:
// a real Azurite, the Microsoft stand-in (devidp), the real handler (the
// same composition root Azure runs) and the demo CMS page. `make run`, the
// browser test, the Python client test, the benchmarks and the load test
// all start it, so they exercise one and the same wiring. Development only:
// never packaged.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/app"
	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/democms"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/queuehost"
)

// ClientID is the stand-in's only application.
const ClientID = "11111111-2222-4333-8444-555555555555"

// Options choose ports (0: any free port) and extra settings.
type Options struct {
	HandlerPort, IdentityPort, CMSPort int
	// TablesConnectionString: use this Table service instead of starting
	// Azurite (a test binary that already runs one).
	TablesConnectionString string
	// Settings override the handler's settings (local.settings.json's
	// Values, a test's REFRESH_MARGIN, ...). Real MICROSOFT_CLIENT_ID there
	// means real Microsoft: the stand-in still runs, but the handler does
	// not use it.
	Settings map[string]string
	// IdentityExpiresIn is the stand-in's access token lifetime.
	IdentityExpiresIn time.Duration
	// Logs receives every component's JSON lines (nil: discarded).
	Logs io.Writer
	// WithoutCMS skips the demo page.
	WithoutCMS bool
	// HTTPClient is the handler's outgoing client (nil: the production
	// one); tests shorten its timeout to provoke timeouts.
	HTTPClient *http.Client
	// ManagedIdentity runs the secretless mode (MICROSOFT_CLIENT_AUTH=
	// managed_identity): no client secret exists; the stand-in also plays
	// the Functions managed-identity endpoint and accepts only its
	// assertions. azidentity reads IDENTITY_ENDPOINT and IDENTITY_HEADER
	// from the process environment, so Start sets them there: one such
	// stack per process (azidentity also caches tokens per process).
	ManagedIdentity bool

	// Timer, when positive, plays the host's timer: a sweep at start and
	// then every Timer (make run: 5 minutes, REFRESH_SCHEDULE's default).
	Timer time.Duration
	// Now is the handler's and the stand-in's clock (nil: time.Now).
	Now func() time.Time

	// HandlerBinary, when set, runs that program (the built `handler`
	// command, see BuildHandler) as a child process with exactly the
	// handler's settings as its environment, instead of the composition
	// root inside this process. Its stdout and stderr are the raw bytes
	// of everything the process prints (the log-leak test scans them);
	// HTTPClient and Now cannot reach a child and must be unset.
	HandlerBinary                string
	HandlerStdout, HandlerStderr io.Writer
}

// ManagedIdentityClientID is the stand-in's user-assigned identity.
const ManagedIdentityClientID = "99999999-8888-4777-8666-555555555555"

// Stack is a running local system.
type Stack struct {
	HandlerURL, IdentityURL, CMSURL string
	CMSKey                          string
	// Settings is the handler's full environment (secrets included: for
	// tests and the printed banner only).
	Settings map[string]string
	IDP      *devidp.Server
	// RealMicrosoft: local.settings.json pointed the handler at Microsoft.
	RealMicrosoft bool

	azurite *azurite.Emulator
	queue   *azurite.Emulator // Azurite's Queue service: webhook deliveries
	trigger *queuehost.Host   // plays the host's queue trigger
	cancel  context.CancelFunc
	done    chan error
	// timerDone is closed when the timer (Options.Timer) has stopped;
	// nil without one.
	timerDone chan struct{}
	servers   []*http.Server
	clock     func() time.Time
}

// Start brings everything up and returns once every part answers.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	logs := o.Logs
	if logs == nil {
		logs = io.Discard
	}
	// A HandlerBinary child keeps its own clock: only the caller's own
	// choice of a clock is refused for it, not the default below.
	clockGiven := o.Now != nil
	if o.Now == nil {
		o.Now = time.Now // the option's default, decided once for every part
	}
	s := &Stack{done: make(chan error, 1), clock: o.Now}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	hl, err := listen(o.HandlerPort)
	if err != nil {
		return nil, fmt.Errorf("devstack: handler port: %w", err)
	}
	il, err := listen(o.IdentityPort)
	if err != nil {
		hl.Close()
		return nil, fmt.Errorf("devstack: Microsoft stand-in port: %w", err)
	}
	s.HandlerURL = "http://localhost:" + port(hl)
	s.IdentityURL = "http://localhost:" + port(il)

	tables := o.TablesConnectionString
	if tables == "" {
		em, err := azurite.Start(ctx, azurite.Options{})
		if err != nil {
			hl.Close()
			il.Close()
			return nil, fmt.Errorf("devstack: %w", err)
		}
		s.azurite = em
		tables = em.ConnectionString()
	}

	clientSecret, cmsKey, encKey := random(32), random(32), base64.StdEncoding.EncodeToString(randomBytes(32))
	env := map[string]string{
		"FUNCTIONS_CUSTOMHANDLER_PORT": port(hl),
		"TABLES_CONNECTION_STRING":     tables,
		"MICROSOFT_CLIENT_ID":          ClientID,
		"MICROSOFT_APP_TENANT_ID":      devidp.ContosoTenantID, // the stand-in app's home tenant
		"MICROSOFT_OAUTH_CALLBACK_URL": s.HandlerURL + "/api/callback",
		"MICROSOFT_AUTHORITY_HOST":     s.IdentityURL,
		"MICROSOFT_GRAPH_URL":          s.IdentityURL,
		"MICROSOFT_CLIENT_AUTH":        config.ClientAuthSecret,
		"MICROSOFT_CLIENT_SECRET":      clientSecret,
		"TOKEN_ENCRYPTION_KEY":         encKey,
		"CMS_API_KEY":                  cmsKey,
	}
	for k, v := range o.Settings {
		env[k] = v
	}
	if id := o.Settings["MICROSOFT_CLIENT_ID"]; id != "" && id != ClientID {
		s.RealMicrosoft = true
		for _, k := range []string{"MICROSOFT_AUTHORITY_HOST", "MICROSOFT_GRAPH_URL", "MICROSOFT_APP_TENANT_ID"} {
			if _, set := o.Settings[k]; !set {
				delete(env, k)
			}
		}
	}
	s.Settings = env
	s.CMSKey = env["CMS_API_KEY"]

	cmsURL := ""
	var cl net.Listener
	if !o.WithoutCMS {
		if cl, err = listen(o.CMSPort); err != nil {
			hl.Close()
			il.Close()
			return nil, fmt.Errorf("devstack: demo CMS port: %w", err)
		}
		cmsURL = "http://localhost:" + port(cl)
		if _, set := o.Settings["ALLOWED_RETURN_URLS"]; !set {
			env["ALLOWED_RETURN_URLS"] = cmsURL + "/"
		}
	} else if _, set := o.Settings["ALLOWED_RETURN_URLS"]; !set {
		env["ALLOWED_RETURN_URLS"] = "http://localhost/"
	}
	s.CMSURL = cmsURL

	idpCfg := devidp.Config{
		ClientID: ClientID, ClientSecret: clientSecret, RedirectURL: s.HandlerURL + "/api/callback",
		ExpiresIn: o.IdentityExpiresIn, Logger: component(logs, "devidp"), Now: o.Now,
	}
	if o.ManagedIdentity {
		idpCfg.ClientSecret = "" // no secret exists at all
		idpCfg.ManagedIdentityClientID = ManagedIdentityClientID
		idpCfg.IdentityHeader = random(16)
		delete(env, "MICROSOFT_CLIENT_SECRET")
		env["MICROSOFT_CLIENT_AUTH"] = config.ClientAuthManagedIdentity
		env["AZURE_CLIENT_ID"] = ManagedIdentityClientID
		if err := os.Setenv("IDENTITY_ENDPOINT", s.IdentityURL+devidp.ManagedIdentityPath); err != nil {
			return nil, err
		}
		if err := os.Setenv("IDENTITY_HEADER", idpCfg.IdentityHeader); err != nil {
			return nil, err
		}
	}
	idp, err := devidp.New(idpCfg)
	if err != nil {
		return nil, fmt.Errorf("devstack: %w", err)
	}
	s.IDP = idp
	s.serve(il, idp)

	if err := s.startQueue(ctx, env); err != nil {
		return nil, err
	}
	if o.HandlerBinary != "" && (o.HTTPClient != nil || clockGiven) {
		hl.Close()
		return nil, errors.New("devstack: HTTPClient and Now cannot reach a HandlerBinary child")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	if o.HandlerBinary != "" {
		// The child listens on the port itself, as under the host.
		hl.Close()
		if err := s.startChild(runCtx, o, env); err != nil {
			cancel()
			return nil, err
		}
	} else {
		cfg := config.Load(mapEnv(env))
		go func() {
			s.done <- app.Serve(runCtx, hl, cfg, app.Deps{Getenv: mapEnv(env), Log: component(logs, "handler"), HTTPClient: o.HTTPClient, Now: o.Now})
		}()
	}
	// Set only once something will answer on s.done: Stop waits for it.
	s.cancel = cancel

	if cl != nil {
		graph := env["MICROSOFT_GRAPH_URL"]
		if graph == "" {
			graph = "https://graph.microsoft.com"
		}
		admin := ""
		if !s.RealMicrosoft {
			admin = s.IdentityURL + "/devidp/"
		}
		s.serve(cl, democms.New(democms.Options{
			ConnectorURL: s.HandlerURL, SelfURL: cmsURL, CMSKey: s.CMSKey,
			GraphURL: graph, IdentityAdminURL: admin,
		}))
	}
	for _, u := range []string{s.HandlerURL + "/", s.IdentityURL + "/devidp/status", cmsURL + "/"} {
		if u == "/" {
			continue
		}
		if err := waitHTTP(ctx, u); err != nil {
			return nil, fmt.Errorf("devstack: %s did not answer: %w", u, err)
		}
	}
	if err := s.startTrigger(env, logs); err != nil {
		return nil, err
	}
	if o.Timer > 0 {
		s.timerDone = make(chan struct{})
		go func() {
			defer close(s.timerDone)
			s.runTimer(runCtx, o.Timer)
		}()
	}
	return s, nil
}

// Stop ends everything Start started, Azurite included.
func (s *Stack) Stop() {
	if s.trigger != nil {
		s.trigger.Stop()
		s.trigger = nil
	}
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
	if s.timerDone != nil {
		<-s.timerDone // its sweep ends with the cancelled context
		s.timerDone = nil
	}
	for _, hs := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = hs.Shutdown(ctx)
		cancel()
	}
	s.servers = nil
	if s.azurite != nil {
		_ = s.azurite.Stop()
		s.azurite = nil
	}
	if s.queue != nil {
		_ = s.queue.Stop()
		s.queue = nil
	}
}

// ReadLocalSettings returns local.settings.json's Values, or nil when the
// file does not exist.
func ReadLocalSettings(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f struct {
		Values map[string]string `json:"Values"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("devstack: %s: %w", path, err)
	}
	// Settings only the Functions host reads would confuse nothing, but
	// AzureWebJobsStorage's development value is not ours to use.
	delete(f.Values, "FUNCTIONS_WORKER_RUNTIME")
	delete(f.Values, "AzureWebJobsStorage")
	for k, v := range f.Values {
		if strings.TrimSpace(v) == "" {
			delete(f.Values, k)
		}
	}
	return f.Values, nil
}

func (s *Stack) serve(l net.Listener, h http.Handler) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, hs)
	go func() { _ = hs.Serve(l) }()
}

func listen(p int) (net.Listener, error) {
	return net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
}

func port(l net.Listener) string {
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func component(w io.Writer, name string) zerolog.Logger {
	return zerolog.New(w).With().Timestamp().Str("component", name).Logger()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux; a failure is fatal
	}
	return b
}

func random(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

func waitHTTP(ctx context.Context, url string) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
