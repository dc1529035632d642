// Package azurite runs a real Azurite emulator (its Table service, or its
// Queue service) as a child process, in memory and on a free loopback port,
// for the store and queue tests and for `make run`. It owns finding the
// azurite-table / azurite-queue binaries (installed by `make deps` under
// .devtools/npm), starting one, waiting until it answers and stopping it
// without leaving an orphan behind.
//
// It is development tooling: nothing in the deployed handler imports it.
package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Account and Key are Azurite's well-known development account. They are
// public constants of the emulator, not secrets.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// BinEnv names the environment variable that overrides where azurite-table
// is found. The Makefile exports it.
const BinEnv = "AZURITE_TABLE_BIN"

// binRelPath is where `make deps` (npm ci in .devtools/npm) installs the
// emulator, relative to the repository root.
var binRelPath = filepath.Join(".devtools", "npm", "node_modules", ".bin", "azurite-table")

// ErrNotInstalled means the azurite-table binary could not be found.
var ErrNotInstalled = errors.New("azurite: azurite-table not found (run `make deps`)")

const (
	defaultStartTimeout = 30 * time.Second
	// startAttempts bounds retries when the chosen port was taken between
	// probing it and Azurite binding it (another test binary on this machine
	// can win that race).
	startAttempts = 3
	// outputTail is how much of the emulator's output is kept for error
	// messages.
	outputTail = 16 << 10
	// stopWait bounds how long Stop waits for the killed process and its
	// output pipe.
	stopWait = 5 * time.Second
)

// startedMarker is the line Azurite prints once its server is listening
// (dist/src/table/main.js prints it after server.start() resolves). Waiting
// for it, rather than for any answer on the port, guarantees the answering
// server is ours and not another process that holds the same port.
var startedMarker = []byte("Azurite Table service successfully started")

// queueStartedMarker is the Queue service's line (dist/src/queue/main.js).
var queueStartedMarker = []byte("Azurite Queue service successfully listens on")

// Service names one of Azurite's services.
type Service string

const (
	// Table is the Table service (azurite-table), the default.
	Table Service = "table"
	// Queue is the Queue service (azurite-queue): the webhook deliveries'
	// queue, as the Functions host's storage account carries it in Azure.
	Queue Service = "queue"
)

// Options configure Start. The zero value is ready to use.
type Options struct {
	// Service is what to run: Table (the zero value) or Queue.
	Service Service
	// Bin is the service's executable. Empty: FindBinary's azurite-table,
	// or azurite-queue beside it.
	Bin string
	// Output, when set, receives the emulator's stdout and stderr.
	Output io.Writer
	// StartTimeout bounds each start attempt. Zero: 30 seconds.
	StartTimeout time.Duration
}

// Emulator is one running Azurite Table service. Stop it when done.
type Emulator struct {
	service Service
	port    int
	cmd     *exec.Cmd
	dir     string // its working directory, Azurite's workspace; removed by Stop
	out     *outputWriter
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// Start runs azurite-table in memory on a free 127.0.0.1 port and returns
// once it answers HTTP. ctx bounds the start only; the emulator runs until
// Stop.
func Start(ctx context.Context, opts Options) (*Emulator, error) {
	bin := opts.Bin
	service := opts.Service
	if service == "" {
		service = Table
	}
	if service != Table && service != Queue {
		return nil, fmt.Errorf("azurite: unknown service %q", service)
	}
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
		if service == Queue {
			// npm installs every service's launcher in the same .bin.
			bin = filepath.Join(filepath.Dir(bin), "azurite-queue")
			if _, err := os.Stat(bin); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrNotInstalled, bin, err)
			}
		}
	} else if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotInstalled, bin, err)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = defaultStartTimeout
	}
	var errs []error
	for range startAttempts {
		e, err := startOnce(ctx, service, bin, opts.Output, timeout)
		if err == nil {
			return e, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// errExitedEarly marks an attempt whose process died before it was ready.
var errExitedEarly = errors.New("azurite: emulator exited before it was ready")

// errPortTaken marks an early exit because the port was taken between
// freePort and Azurite binding it; Start then tries another port. Node's
// output is the only report of why the child died, hence the text match.
var errPortTaken = errors.New("azurite: port taken")

const addrInUse = "EADDRINUSE"

func startOnce(ctx context.Context, service Service, bin string, output io.Writer, timeout time.Duration) (*Emulator, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Azurite creates its workspace (--location, default the working
	// directory) even in memory, and refuses --location together with
	// --inMemoryPersistence: run it in a private temporary directory, out of
	// the caller's (a package directory during tests).
	dir, err := os.MkdirTemp("", "azurite-*")
	if err != nil {
		return nil, fmt.Errorf("azurite: workspace: %w", err)
	}
	marker := startedMarker
	if service == Queue {
		marker = queueStartedMarker
	}
	out := newOutputWriter(output, marker)
	cmd := exec.Command(bin,
		"--inMemoryPersistence",
		"--disableTelemetry",
		"--skipApiVersionCheck",
		// Loose mode ignores headers and parameters Azurite does not
		// implement (Azure does) instead of failing the request: aztables
		// 1.4.1 needs none today, an SDK upgrade must not break the tests.
		"--loose",
		// The access log would flood Output with a line per request.
		"--silent",
		"--"+string(service)+"Host", "127.0.0.1",
		"--"+string(service)+"Port", strconv.Itoa(port),
	)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	// Node could leave a grandchild holding the output pipe; do not let
	// Wait hang on it once the process itself is gone.
	cmd.WaitDelay = stopWait
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("azurite: start %s: %w", bin, err)
	}
	e := &Emulator{service: service, port: port, cmd: cmd, dir: dir, out: out, exited: make(chan struct{})}
	go func() {
		e.waitErr = cmd.Wait()
		close(e.exited)
	}()
	if err := e.waitReady(ctx, timeout); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// waitReady waits for Azurite's start-up line, then for an HTTP answer.
func (e *Emulator) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-e.out.started:
	case <-e.exited:
		return e.exitedEarly()
	case <-ctx.Done():
		return fmt.Errorf("azurite: not started on port %d: %w; output:\n%s", e.port, ctx.Err(), e.out.tail())
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	url := e.Endpoint() + "/Tables"
	if e.service == Queue {
		url = e.Endpoint() + "?comp=list"
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("azurite: probe: %w", err)
		}
		// Any HTTP answer (401 without a signature) proves it serves.
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-e.exited:
			return e.exitedEarly()
		case <-ctx.Done():
			return fmt.Errorf("azurite: no answer on port %d: %w; output:\n%s", e.port, ctx.Err(), e.out.tail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (e *Emulator) exitedEarly() error {
	tail := e.out.tail()
	if strings.Contains(tail, addrInUse) {
		return fmt.Errorf("%w: %w (%v) on port %d; output:\n%s", errExitedEarly, errPortTaken, e.waitErr, e.port, tail)
	}
	return fmt.Errorf("%w (%v) on port %d; output:\n%s", errExitedEarly, e.waitErr, e.port, tail)
}

// Port is the loopback port the emulator listens on.
func (e *Emulator) Port() int { return e.port }

// Endpoint is the service's URL, account path included.
func (e *Emulator) Endpoint() string {
	return "http://127.0.0.1:" + strconv.Itoa(e.port) + "/" + Account
}

// TableEndpoint is the Table service URL, account path included.
func (e *Emulator) TableEndpoint() string { return e.Endpoint() }

// ConnectionString is a full connection string for the service: for the
// Table service, aztables' and TABLES_CONNECTION_STRING's; for the Queue
// service, azqueue's and AzureWebJobsStorage's.
func (e *Emulator) ConnectionString() string {
	name := "TableEndpoint="
	if e.service == Queue {
		name = "QueueEndpoint="
	}
	return "DefaultEndpointsProtocol=http;AccountName=" + Account + ";AccountKey=" + Key +
		";" + name + e.Endpoint() + ";"
}

// Pid is the emulator's process ID (also its process group ID on Unix).
func (e *Emulator) Pid() int { return e.cmd.Process.Pid }

// Stop kills the emulator's whole process group, waits for it and removes
// its workspace. Safe to call more than once and concurrently.
func (e *Emulator) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		select {
		case <-e.exited:
		default:
			if err := killGroup(e.cmd.Process); err != nil {
				errs = append(errs, fmt.Errorf("azurite: stop: %w", err))
			}
			select {
			case <-e.exited:
			case <-time.After(stopWait):
				errs = append(errs, fmt.Errorf("azurite: stop: process %d did not exit", e.cmd.Process.Pid))
			}
		}
		// Killed grandchildren are reaped by init, not by us: wait until
		// the group is really empty so "stopped" means no process is left.
		if err := waitGroupGone(e.cmd.Process.Pid, stopWait); err != nil {
			errs = append(errs, fmt.Errorf("azurite: stop: %w", err))
		}
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, fmt.Errorf("azurite: stop: %w", err))
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// FindBinary locates azurite-table: $AZURITE_TABLE_BIN when set, else
// .devtools/npm/node_modules/.bin/azurite-table in the working directory or
// the nearest parent that has it (tests run in their package's directory).
// The error wraps ErrNotInstalled.
func FindBinary() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("azurite: working directory: %w", err)
	}
	return findBinary(os.Getenv, wd)
}

func findBinary(getenv func(string) string, wd string) (string, error) {
	if bin := getenv(BinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("%w: $%s=%s: %w", ErrNotInstalled, BinEnv, bin, err)
		}
		return bin, nil
	}
	for dir := wd; ; {
		bin := filepath.Join(dir, binRelPath)
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("azurite: %s: %w", bin, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%w: no %s in %s or any parent, and $%s is not set", ErrNotInstalled, binRelPath, wd, BinEnv)
		}
		dir = parent
	}
}

// freePort asks the kernel for a free loopback port. It is free when
// probed; Start retries if someone else binds it first.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("azurite: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// outputWriter forwards the emulator's output, keeps its tail for error
// messages and signals the start-up line.
type outputWriter struct {
	marker  []byte
	mu      sync.Mutex
	forward io.Writer
	buf     []byte // the last outputTail bytes
	scan    []byte // the current partial line, for the marker
	started chan struct{}
	seen    bool
}

func newOutputWriter(forward io.Writer, marker []byte) *outputWriter {
	return &outputWriter{marker: marker, forward: forward, started: make(chan struct{})}
}

func (w *outputWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > outputTail {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-outputTail:]...)
	}
	if !w.seen {
		w.scan = append(w.scan, p...)
		if bytes.Contains(w.scan, w.marker) {
			w.seen = true
			w.scan = nil
			close(w.started)
		} else if i := bytes.LastIndexByte(w.scan, '\n'); i >= 0 {
			w.scan = append(w.scan[:0], w.scan[i+1:]...)
		} else if n := len(w.marker); len(w.scan) > 4*outputTail {
			// A very long line without the marker: keep only what could
			// still be the marker's beginning.
			w.scan = append(w.scan[:0], w.scan[len(w.scan)-n:]...)
		}
	}
	if w.forward != nil {
		// A failing forward must not make the emulator's pipe fail.
		_, _ = w.forward.Write(p)
	}
	return len(p), nil
}

func (w *outputWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
