//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/app"
	"github.com/megdocs/msconnector/handler/internal/config"
)

// The handler child: this binary re-executed with -role=handler. It runs
// app.Serve on the listener passed as file descriptor 3 with the settings
// in its environment, exactly as the Functions host runs the handler, and
// its only addition is measurement: every LOAD_SAMPLE_EVERY it writes one
// JSON line of memory statistics to stdout, and a last one at exit.
const (
	envLog    = "LOAD_HANDLER_LOG"
	envSample = "LOAD_SAMPLE_EVERY"
)

// memSample is one statistics line of the child.
type memSample struct {
	Kind       string    `json:"kind"` // "sample" or "final"
	At         time.Time `json:"at"`
	RSSKiB     int64     `json:"rss_kib"` // /proc/self/status VmRSS
	HWMKiB     int64     `json:"hwm_kib"` // VmHWM: the kernel's peak
	HeapInuse  uint64    `json:"heap_inuse"`
	HeapAlloc  uint64    `json:"heap_alloc"`
	Sys        uint64    `json:"sys"`
	NumGC      uint32    `json:"num_gc"`
	Goroutines int       `json:"goroutines"`
	// Outgoing is set on the final line only.
	Outgoing map[string]destStats `json:"outgoing,omitempty"`
}

func takeSample(kind string) memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := memSample{Kind: kind, At: time.Now(), HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, Sys: ms.Sys,
		NumGC: ms.NumGC, Goroutines: runtime.NumGoroutine()}
	s.RSSKiB, _ = statusKiB("/proc/self/status", "VmRSS")
	s.HWMKiB, _ = statusKiB("/proc/self/status", "VmHWM")
	return s
}

func runHandlerChild() error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return fmt.Errorf("listener from fd 3: %w", err)
	}
	every, err := time.ParseDuration(os.Getenv(envSample))
	if err != nil || every <= 0 {
		return fmt.Errorf("%s: %q", envSample, os.Getenv(envSample))
	}
	logFile, err := os.OpenFile(os.Getenv(envLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("handler log: %w", err)
	}
	defer logFile.Close()
	cfg := config.Load(os.Getenv)
	if len(cfg.Problems) > 0 {
		return fmt.Errorf("settings: %v", cfg.Problems)
	}

	hc := app.NewHTTPClient()
	out := newOutgoing(hc.Transport.(*http.Transport), cfg.TablesConnectionString, cfg.AuthorityHost)
	hc.Transport = out

	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(kind string) {
		s := takeSample(kind)
		if kind == "final" {
			s.Outgoing = out.stats()
		}
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(s)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				emit("sample")
			case <-done:
				return
			}
		}
	}()
	log := zerolog.New(logFile).With().Timestamp().Logger()
	err = app.Serve(ctx, ln, cfg, app.Deps{Getenv: os.Getenv, Log: log, HTTPClient: hc})
	close(done)
	emit("final")
	return err
}

// handlerProc is the running child, seen from the parent.
type handlerProc struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the child has been waited for
	waitErr error         // set before exited is closed

	mu      sync.Mutex
	samples []memSample
	final   chan memSample
}

func startHandler(ctx context.Context, listener *os.File, baseURL string, env []string) (*handlerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own executable: %w", err)
	}
	cmd := exec.Command(self, "-role=handler")
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{listener}
	cmd.Stderr = os.Stderr
	// Die with the parent: no orphan holding a port on a shared machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start handler: %w", err)
	}
	p := &handlerProc{cmd: cmd, exited: make(chan struct{}), final: make(chan memSample, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var s memSample
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				fmt.Fprintf(os.Stderr, "load: handler said %q\n", sc.Text())
				continue
			}
			if s.Kind == "final" {
				p.final <- s
				continue
			}
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.mu.Unlock()
		}
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	if err := waitReady(ctx, baseURL); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

func waitReady(ctx context.Context, baseURL string) error {
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET / answered %d", resp.StatusCode)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("handler not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// samplesSince returns the samples taken at or after t.
func (p *handlerProc) samplesSince(t time.Time) []memSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []memSample
	for _, s := range p.samples {
		if !s.At.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

// stop asks the child to shut down as the host does (SIGTERM) and returns
// its last statistics.
func (p *handlerProc) stop() (memSample, error) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return memSample{}, fmt.Errorf("stop handler: %w", err)
	}
	var s memSample
	select {
	case s = <-p.final:
	case <-time.After(30 * time.Second):
		p.kill()
		return s, errors.New("the handler did not report at exit")
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return s, fmt.Errorf("handler exited: %w", p.waitErr)
		}
	case <-time.After(30 * time.Second):
		p.kill()
		return s, errors.New("the handler did not exit")
	}
	return s, nil
}

// kill ends the child at once, by its own process ID (a no-op once it has
// exited).
func (p *handlerProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

// statusKiB reads one "Name:   123 kB" line of a /proc status file.
func statusKiB(path, field string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if name, rest, ok := strings.Cut(line, ":"); ok && name == field {
			if f := strings.Fields(rest); len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// loadAvg is /proc/loadavg's first three numbers.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
