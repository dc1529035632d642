//go:build linux

// Command bench is `make bench`: it measures the connector's timer sweep and
// token API against a real Azurite and the Microsoft stand-in on loopback,
// prints a Markdown report and, with -out, writes it (docs/benchmarks.md).
// It is a benchmark, not a test: it passes or fails nothing, it reports
// numbers against the targets of issue 3 and says which were missed.
//
// The parent process starts Azurite (in memory, free port), serves the
// stand-in (devidp) in process, seeds connections through the stand-in's
// real code flow and the product's table store, and drives the load. The
// product runs in a child process: this binary re-executed with
// -role=handler runs app.Serve, the composition root Azure runs, on a
// listener the parent hands down. The sweep is a real timer invocation
// (POST /refresh) and the token calls are real CMS requests, so what is
// measured is the deployed wiring; the child's peak RSS is the handler's
// alone; and its Table requests are counted by a RoundTripper around the one
// HTTP client the app gives aztables.
//
// Development only: never packaged.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/app"
	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/devproc"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/sweep"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// clientID is the stand-in's one application.
const clientID = "11111111-2222-4333-8444-555555555555"

// options are the command's flags.
type options struct {
	sizes, concurrency []int
	latency            time.Duration
	tokenCalls         int
	tokenUsers         int
	tokenWorkers       []int
	seedWorkers        int
	out                string
	logs               string
	profiles           string
	command            string
}

func main() {
	role := flag.String("role", "", "internal: \"handler\" runs the handler child")
	sizes := flag.String("sizes", "1000,10000", "connections per sweep case")
	conc := flag.String("concurrency", "16,64", "REFRESH_CONCURRENCY values per size")
	latency := flag.Duration("latency", 50*time.Millisecond, "the stand-in's delay per token request during sweeps")
	tokenCalls := flag.Int("token-calls", 20000, "measured token API calls per caller count")
	tokenUsers := flag.Int("token-users", 1000, "distinct users the token calls cycle over")
	tokenWorkers := flag.String("token-callers", "1,8", "parallel CMS callers for the token API runs")
	seedWorkers := flag.Int("seed-workers", 32, "parallel sign-ins and inserts while seeding")
	out := flag.String("out", "", "also write the report to this file (docs/benchmarks.md)")
	logs := flag.String("logs", "", "keep the handler's JSON logs in this directory (default: a temporary one, removed)")
	profiles := flag.String("cpuprofile", "", "write a CPU profile of each handler child into this directory (go tool pprof)")
	flag.Parse()

	if *role == "handler" {
		if err := runHandlerChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench handler:", err)
			os.Exit(1)
		}
		return
	}
	o := options{latency: *latency, tokenCalls: *tokenCalls, tokenUsers: *tokenUsers,
		seedWorkers: *seedWorkers, out: *out, logs: *logs, profiles: *profiles, command: commandLine()}
	var err error
	if o.sizes, err = intList(*sizes, 1, 100000); err == nil {
		if o.concurrency, err = intList(*conc, 1, 256); err == nil {
			o.tokenWorkers, err = intList(*tokenWorkers, 1, 256)
		}
	}
	if err == nil && (o.tokenCalls < 1 || o.tokenCalls > 1_000_000 || o.tokenUsers < 1 || o.seedWorkers < 1 || o.latency < 0) {
		err = errors.New("token-calls must be 1..1000000, token-users and seed-workers at least 1, latency not negative")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func intList(s string, lo, hi int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q: want comma-separated integers in %d..%d", s, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

// commandLine is how this run was started, for the report: `make bench`
// when the Makefile says so (it sets BENCH_COMMAND), else the arguments.
func commandLine() string {
	if c := os.Getenv("BENCH_COMMAND"); c != "" {
		return c
	}
	return "go run ./handler/cmd/bench " + strings.Join(os.Args[1:], " ")
}

// env is everything a run shares.
type env struct {
	o        options
	emu      *azurite.Emulator
	svc      *aztables.ServiceClient
	store    *tablestore.Store
	idp      *devidp.Server
	ms       *msidentity.Client
	hc       *http.Client
	listener *os.File
	baseURL  string
	settings map[string]string
	cmsKey   string
	logDir   string
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, o options) (err error) {
	rep := report{opts: o, machine: describeMachine(), started: time.Now(), uptimeBefore: uptime()}
	progress("machine: %d CPUs, %s; %s", rep.machine.CPUs, rep.machine.CPUModel, rep.uptimeBefore)

	e := &env{o: o}
	if e.logDir = o.logs; e.logDir == "" {
		if e.logDir, err = os.MkdirTemp("", "msconnector-bench-*"); err != nil {
			return err
		}
		defer os.RemoveAll(e.logDir)
	} else if err := os.MkdirAll(e.logDir, 0o755); err != nil {
		return err
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return err
		}
	}

	progress("starting Azurite (in memory)")
	if e.emu, err = azurite.Start(ctx, azurite.Options{}); err != nil {
		return err
	}
	defer e.emu.Stop()
	rep.azuriteVersion = azuriteVersion()

	// The handler's listener: the parent keeps it open and hands it to
	// each child, so the callback URL (registered at the stand-in) is the
	// same for every child.
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer hl.Close()
	if e.listener, err = hl.(*net.TCPListener).File(); err != nil {
		return err
	}
	defer e.listener.Close()
	e.baseURL = "http://" + hl.Addr().String()
	callback := e.baseURL + "/api/callback"

	// The stand-in, in this process (the handler child reaches it over
	// loopback like Microsoft).
	clientSecret := randomString(32)
	if e.idp, err = devidp.New(devidp.Config{ClientID: clientID, ClientSecret: clientSecret, RedirectURL: callback, Logger: zerolog.Nop(), Now: time.Now}); err != nil {
		return err
	}
	il, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	idpSrv := &http.Server{Handler: e.idp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = idpSrv.Serve(il) }()
	defer idpSrv.Close()
	idpURL := "http://" + il.Addr().String()

	// A real random token-encryption key, as the deployment generates.
	key := make([]byte, sealing.KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	e.cmsKey = randomString(32)
	e.settings = map[string]string{
		"TABLES_CONNECTION_STRING":     e.emu.ConnectionString(),
		"MICROSOFT_CLIENT_ID":          clientID,
		"MICROSOFT_OAUTH_CALLBACK_URL": callback,
		"MICROSOFT_AUTHORITY_HOST":     idpURL,
		"MICROSOFT_GRAPH_URL":          idpURL,
		"MICROSOFT_CLIENT_AUTH":        "secret",
		"ALLOWED_RETURN_URLS":          "http://localhost/",
		"MICROSOFT_CLIENT_SECRET":      clientSecret,
		"TOKEN_ENCRYPTION_KEY":         base64.StdEncoding.EncodeToString(key),
		"CMS_API_KEY":                  e.cmsKey,
	}

	// The parent's own product clients, for seeding: the same table store
	// and sealing as the handler, the same msidentity client.
	e.hc = app.NewHTTPClient()
	getenv := func(k string) string { return e.settings[k] }
	src := secrets.NewEnv(getenv)
	if e.svc, err = aztables.NewServiceClientFromConnectionString(e.emu.ConnectionString(),
		&aztables.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.hc, Retry: policy.RetryOptions{MaxRetries: 2}}}); err != nil {
		return err
	}
	e.store = tablestore.New(e.svc, sealing.New(sealing.NewSecretKeyring(src)), tablestore.Options{Now: time.Now})
	if err := e.store.EnsureTables(ctx); err != nil {
		return err
	}
	if e.ms, err = msidentity.New(msidentity.Config{
		AuthorityHost: idpURL, ClientID: clientID, RedirectURL: callback, GraphURL: idpURL,
		Scopes:     strings.Fields("User.Read Files.ReadWrite.All offline_access"),
		HTTPClient: e.hc, Logger: zerolog.Nop(), Now: time.Now,
		Credential: msidentity.NewSecretCredential(msidentity.SecretFunc(func(ctx context.Context, name string, _ bool) (string, error) {
			s, err := src.Get(ctx, name)
			return s.Value, err
		})),
	}); err != nil {
		return err
	}

	maxN := 0
	for _, n := range o.sizes {
		maxN = max(maxN, n)
	}
	progress("signing in %d connections through the stand-in's code flow", max(maxN, o.tokenUsers))
	t0 := time.Now()
	signedIn := t0
	grants, err := signIns(ctx, max(maxN, o.tokenUsers), o.seedWorkers, e.idp, e.ms, e.hc)
	if err != nil {
		return fmt.Errorf("sign-ins: %w", err)
	}
	rep.signIn = time.Since(t0)
	progress("  %d sign-ins in %s", len(grants), rep.signIn.Round(time.Millisecond))

	for _, n := range o.sizes {
		for _, c := range o.concurrency {
			r, err := e.sweepCase(ctx, grants[:n], c)
			if err != nil {
				return fmt.Errorf("sweep %d/%d: %w", n, c, err)
			}
			rep.sweeps = append(rep.sweeps, r)
		}
	}

	if rep.token, err = e.tokenCase(ctx, grants[:o.tokenUsers], signedIn); err != nil {
		return fmt.Errorf("token API: %w", err)
	}

	rep.finished = time.Now()
	rep.uptimeAfter = uptime()
	md := rep.markdown()
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		progress("wrote %s", o.out)
	}
	return nil
}

// handlerEnv is the child's whole environment: the handler settings plus
// what the bench adds, and the Go runtime knobs when the caller set them
// (so an experiment with GOGC or GOMEMLIMIT reaches the measured process).
func (e *env) handlerEnv(extra map[string]string) []string {
	var out []string
	for k, v := range e.settings {
		out = append(out, k+"="+v)
	}
	for k, v := range extra {
		out = append(out, k+"="+v)
	}
	if e.o.profiles != "" {
		name := strings.TrimSuffix(filepath.Base(extra[envLog]), ".jsonl") + ".pprof"
		out = append(out, envProfile+"="+filepath.Join(e.o.profiles, name))
	}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// sweepResult is one sweep case.
type sweepResult struct {
	N, Concurrency int
	Seed           time.Duration
	Summary        sweep.Summary
	Wall           time.Duration
	Bound          time.Duration
	Idle, Final    procStats
	IDPRefreshes   int
	AzuriteCPU     time.Duration
	ParentCPU      time.Duration
	Events         map[string]int
	LoadBefore     string
}

func (e *env) sweepCase(ctx context.Context, grants []msidentity.Tokens, c int) (sweepResult, error) {
	n := len(grants)
	r := sweepResult{N: n, Concurrency: c, Bound: time.Duration(n) * e.o.latency / time.Duration(c)}
	progress("sweep case: %d connections, REFRESH_CONCURRENCY=%d: seeding", n, c)
	t0 := time.Now()
	if err := resetTable(ctx, e.svc, tablestore.DefaultConnectionsTable); err != nil {
		return r, err
	}
	if err := storeDue(ctx, e.store, grants, e.o.seedWorkers, time.Now()); err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	r.Seed = time.Since(t0)

	logPath := filepath.Join(e.logDir, fmt.Sprintf("sweep-%d-c%d.jsonl", n, c))
	h, err := startHandler(ctx, e.listener, e.baseURL, e.handlerEnv(map[string]string{
		"REFRESH_CONCURRENCY": strconv.Itoa(c),
		envLog:                logPath,
	}))
	if err != nil {
		return r, err
	}
	if r.Idle, err = h.snapshot(); err != nil {
		h.Kill()
		return r, err
	}
	e.idp.SetLatency(e.o.latency)
	defer e.idp.SetLatency(0)
	before := refreshCount(e.idp)
	azBefore, _ := cpuOfPid(e.emu.Pid())
	pu, ps := cpuOfSelf()
	r.LoadBefore = devproc.LoadAvg()
	progress("  seeded in %s; invoking the timer (ideal bound %s)", r.Seed.Round(time.Millisecond), r.Bound.Round(time.Millisecond))

	r.Summary, r.Wall, err = invokeTimer(ctx, e.baseURL)
	if err != nil {
		h.Kill()
		return r, err
	}
	azAfter, _ := cpuOfPid(e.emu.Pid())
	pu2, ps2 := cpuOfSelf()
	r.AzuriteCPU, r.ParentCPU = azAfter-azBefore, (pu2-pu)+(ps2-ps)
	r.IDPRefreshes = refreshCount(e.idp) - before
	if r.Final, err = h.stop(); err != nil {
		return r, err
	}
	if r.Events, err = countEvents(logPath); err != nil {
		return r, err
	}
	progress("  wall %s, refreshed %d/%d, peak RSS %.1f MiB, %d Table requests",
		r.Wall.Round(time.Millisecond), r.Summary.Refreshed, r.Summary.Due, mib(r.Final.VmHWMKiB), r.Final.TableRequests)
	return r, nil
}

// tokenResult is the token API case.
type tokenResult struct {
	Users      int
	Warmup     time.Duration
	Runs       []latencies
	Tables     []int64 // Table requests during each run
	HandlerCPU []time.Duration
	AzuriteCPU []time.Duration
	Identity   int64 // identity requests during all runs (want 0: none due)
	Refreshes  int   // stand-in refresh grants during all runs
	Final      procStats
	Events     map[string]int
	LoadBefore string
}

// tokenCase measures POST /api/connections/{id}/token for connections that
// are not due: a table of exactly these connections, stored as the
// connect completion stores them (access tokens that live about another hour, far
// outside the 5-minute margin). A first call per user, not measured,
// writes LastUsedAt in the background as the first use in 15 minutes
// does; the measured calls are the steady state: one Table read each.
func (e *env) tokenCase(ctx context.Context, grants []msidentity.Tokens, signedIn time.Time) (tokenResult, error) {
	r := tokenResult{Users: len(grants)}
	progress("token API: storing %d connections, none due", len(grants))
	if err := resetTable(ctx, e.svc, tablestore.DefaultConnectionsTable); err != nil {
		return r, err
	}
	if err := storeFresh(ctx, e.store, grants, e.o.seedWorkers, signedIn); err != nil {
		return r, fmt.Errorf("seed: %w", err)
	}
	users := make([]string, len(grants))
	for i := range users {
		users[i] = userID(i)
	}
	logPath := filepath.Join(e.logDir, "token-api.jsonl")
	h, err := startHandler(ctx, e.listener, e.baseURL, e.handlerEnv(map[string]string{envLog: logPath}))
	if err != nil {
		return r, err
	}
	defer h.Kill()
	maxW := 1
	for _, w := range e.o.tokenWorkers {
		maxW = max(maxW, w)
	}
	c := newLoopbackClient(maxW, 30*time.Second)
	defer c.CloseIdleConnections()
	notBefore := time.Now().Add(connection.DefaultPolicy().Margin)

	progress("token API: warming up (%d users, one call each)", len(users))
	t0 := time.Now()
	if w := tokenLoad(ctx, c, e.baseURL, e.cmsKey, users, len(users), min(maxW, 8), notBefore); w.Errors > 0 {
		return r, fmt.Errorf("warm-up: %d errors, first: %s", w.Errors, w.FirstError)
	}
	r.Warmup = time.Since(t0)
	// Let the background LastUsedAt writes finish before measuring.
	time.Sleep(2 * time.Second)
	before := refreshCount(e.idp)
	prev, err := h.snapshot()
	if err != nil {
		return r, err
	}
	firstIdentity := prev.IdentityRequests
	r.LoadBefore = devproc.LoadAvg()
	for _, w := range e.o.tokenWorkers {
		progress("token API: %d calls from %d caller(s)", e.o.tokenCalls, w)
		az0, _ := cpuOfPid(e.emu.Pid())
		l := tokenLoad(ctx, c, e.baseURL, e.cmsKey, users, e.o.tokenCalls, w, notBefore)
		az1, _ := cpuOfPid(e.emu.Pid())
		s, err := h.snapshot()
		if err != nil {
			return r, err
		}
		r.Runs = append(r.Runs, l)
		r.Tables = append(r.Tables, s.TableRequests-prev.TableRequests)
		r.HandlerCPU = append(r.HandlerCPU, (s.CPUUser+s.CPUSys)-(prev.CPUUser+prev.CPUSys))
		r.AzuriteCPU = append(r.AzuriteCPU, az1-az0)
		prev = s
		progress("  p50 %s p99 %s, %d errors", l.P50, l.P99, l.Errors)
	}
	r.Identity = prev.IdentityRequests - firstIdentity
	r.Refreshes = refreshCount(e.idp) - before
	if r.Final, err = h.stop(); err != nil {
		return r, err
	}
	if r.Events, err = countEvents(logPath); err != nil {
		return r, err
	}
	return r, nil
}

// countEvents counts the handler log's lines by their "event" field, which
// also proves the log is the product's (refreshed, refresh_swept,
// request...).
func countEvents(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Event string `json:"event"`
			Class string `json:"class"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			out["(not JSON)"]++
			continue
		}
		k := l.Event
		if l.Class != "" {
			k += "/" + l.Class
		}
		out[k]++
	}
	return out, sc.Err()
}

// azuriteVersion is the installed emulator's package version.
func azuriteVersion() string {
	bin, err := azurite.FindBinary()
	if err != nil {
		return "unknown"
	}
	// .../node_modules/.bin/azurite-table -> .../node_modules/azurite/package.json
	b, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(bin)), "azurite", "package.json"))
	if err != nil {
		return "unknown"
	}
	var p struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &p) != nil || p.Version == "" {
		return "unknown"
	}
	return p.Version
}

func mib(kib int64) float64 { return float64(kib) / 1024 }
