//go:build linux

// Command load is `make load`: a bounded load test of the connector on
// loopback. It starts the local stack (devstack: a real Azurite, the
// Microsoft stand-in and the handler), connects -connections CMS users
// through the real connect flow (connect session, connect link, the
// stand-in's sign-in, callback), then runs -clients concurrent CMS clients
// for -duration mixing POST /api/connect-sessions, GET
// /api/connections/{user_id} and POST /api/connections/{user_id}/token,
// while timer sweeps (POST /refresh with the Functions host's payload) run
// back to back. It prints throughput, p50/p99/max latency per operation,
// responses by status, the handler's memory over time and a data check,
// and exits non-zero when an expectation is broken: a 5xx or transport
// error, a lost or stale refresh token, or memory still growing once warm.
//
// The handler under load runs as a child process (this binary re-executed
// with -role=handler, running app.Serve, the composition root Azure runs)
// so its memory is measured alone: in process, the stand-in's growing
// token records, the load generator's latency buffers and devstack's own
// handler would be counted with it. devstack's in-process handler serves
// only the seeding; both handlers share one Azurite, one encryption key
// and one stand-in.
//
// Development only: never packaged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devproc"
	"github.com/megdocs/msconnector/handler/internal/devstack"
)

type options struct {
	duration     time.Duration
	clients      int
	connections  int
	seedWorkers  int
	expiresIn    time.Duration
	sampleEvery  time.Duration
	timerPayload string
	growthLimit  float64
	logs         string
	out          string
}

func main() {
	role := flag.String("role", "", "internal: \"handler\" runs the handler child")
	var o options
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "how long the clients run (1s..30m)")
	flag.IntVar(&o.clients, "clients", 200, "concurrent CMS clients (1..2000)")
	flag.IntVar(&o.connections, "connections", 1000, "users connected before the load (1..20000)")
	flag.IntVar(&o.seedWorkers, "seed-workers", 16, "parallel connect flows while seeding")
	flag.DurationVar(&o.expiresIn, "expires-in", 6*time.Minute,
		"the stand-in's access token lifetime: 6m keeps every connection due for each sweep (REFRESH_LOOKAHEAD 10m) and makes the token API refresh tokens older than a minute (REFRESH_MARGIN 5m)")
	flag.DurationVar(&o.sampleEvery, "sample", 2*time.Second, "how often the handler reports its memory")
	flag.StringVar(&o.timerPayload, "timer", "handler/internal/funchost/testdata/timer_request.json", "the host's timer invocation body")
	flag.Float64Var(&o.growthLimit, "growth-limit", 0.20, "fail when the last third's mean heap or RSS exceeds the middle third's by more than this fraction")
	flag.StringVar(&o.logs, "logs", "", "keep the components' JSON logs in this directory (default: a temporary one, removed)")
	flag.StringVar(&o.out, "out", "", "also write the report to this file")
	flag.Parse()

	if *role == "handler" {
		if err := runHandlerChild(); err != nil {
			fmt.Fprintln(os.Stderr, "load handler:", err)
			os.Exit(1)
		}
		return
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch {
	case o.duration < time.Second || o.duration > 30*time.Minute:
		return errors.New("-duration must be 1s..30m")
	case o.clients < 1 || o.clients > 2000:
		return errors.New("-clients must be 1..2000")
	case o.connections < 1 || o.connections > 20000:
		return errors.New("-connections must be 1..20000")
	case o.seedWorkers < 1 || o.seedWorkers > 256:
		return errors.New("-seed-workers must be 1..256")
	case o.expiresIn < time.Minute:
		return errors.New("-expires-in must be at least 1m")
	case o.sampleEvery < 100*time.Millisecond || o.sampleEvery > o.duration:
		return errors.New("-sample must be 100ms..duration")
	case o.growthLimit <= 0:
		return errors.New("-growth-limit must be positive")
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}

func run(ctx context.Context, o options) (bool, error) {
	payload, err := os.ReadFile(o.timerPayload)
	if err != nil {
		return false, fmt.Errorf("timer payload: %w", err)
	}
	logDir := o.logs
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "msconnector-load-*"); err != nil {
			return false, err
		}
		defer os.RemoveAll(logDir)
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return false, err
	}
	stackLog, err := os.Create(filepath.Join(logDir, "devstack.log"))
	if err != nil {
		return false, err
	}
	defer stackLog.Close()

	rep := &report{opts: o, started: time.Now(), loadBefore: devproc.LoadAvg()}
	progress("starting the local stack (Azurite in memory, the Microsoft stand-in, the seeding handler)")
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	stack, err := devstack.Start(startCtx, devstack.Options{WithoutCMS: true, IdentityExpiresIn: o.expiresIn, Logs: stackLog})
	cancel()
	if err != nil {
		return false, err
	}
	defer stack.Stop()

	progress("connecting %d users through the connect flow (%d at a time)", o.connections, o.seedWorkers)
	seedStart := time.Now()
	users, err := seed(ctx, stack, o.connections, o.seedWorkers)
	if err != nil {
		return false, fmt.Errorf("seeding: %w", err)
	}
	rep.seedTime = time.Since(seedStart)

	// The handler under load: its own process, on a listener this process
	// keeps open.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	defer ln.Close()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		return false, err
	}
	defer lf.Close()
	baseURL := "http://" + ln.Addr().String()
	childLog := filepath.Join(logDir, "handler.log")
	env := childEnv(stack.Settings, baseURL, childLog, o.sampleEvery)
	progress("starting the handler under load as a child process on %s", baseURL)
	child, err := startHandler(ctx, lf, baseURL, env)
	if err != nil {
		return false, err
	}
	defer child.Kill()

	progress("%d clients for %s, timer sweeps back to back", o.clients, o.duration)
	rep.run = drive(ctx, o, baseURL, stack.CMSKey, users, payload, child)
	rep.memory = child.samplesSince(rep.run.start)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}

	progress("checking every connection's stored refresh token against the stand-in")
	if rep.data, err = checkData(ctx, stack, users); err != nil {
		return false, err
	}
	final, err := child.stop()
	if err != nil {
		return false, err
	}
	rep.final = final
	rep.logEvents, rep.handlerTimes, err = readHandlerLog(childLog)
	if err != nil {
		return false, err
	}
	rep.finished = time.Now()
	rep.loadAfter = devproc.LoadAvg()

	text := rep.render()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return false, err
		}
	}
	return rep.passed(), nil
}

// childEnv is the handler's environment: the stack's settings (the same
// tables, key, secrets and stand-in as the seeding handler) with its own
// port and public URL. MICROSOFT_OAUTH_CALLBACK_URL stays the one the
// stand-in has registered.
func childEnv(settings map[string]string, baseURL, logPath string, sampleEvery time.Duration) []string {
	env := make([]string, 0, len(settings)+4)
	for k, v := range settings {
		switch k {
		case "FUNCTIONS_CUSTOMHANDLER_PORT", "PUBLIC_BASE_URL":
			continue
		}
		env = append(env, k+"="+v)
	}
	port := baseURL[strings.LastIndexByte(baseURL, ':')+1:]
	return append(env,
		"FUNCTIONS_CUSTOMHANDLER_PORT="+port,
		"PUBLIC_BASE_URL="+baseURL,
		envLog+"="+logPath,
		envSample+"="+sampleEvery.String(),
	)
}

// cmsClient is the load's HTTP client: enough idle connections for every
// client goroutine, so the run measures the handler, not TCP handshakes
// and ephemeral ports.
func cmsClient(clients int, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = clients + 16
	tr.MaxIdleConnsPerHost = clients + 16
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func drain(r io.ReadCloser) ([]byte, error) {
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 1<<20))
}
