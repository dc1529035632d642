//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// handlerProc is a running handler child, seen from the parent.
type handlerProc struct {
	cmd    *exec.Cmd
	lines  chan procStats
	exited chan struct{} // closed once the child has been waited for
	err    error         // its exit status, valid after exited
	url    string
}

// startHandler re-executes this binary as a handler child serving on
// listener (which the parent keeps open, so every child answers on the same
// URL) with exactly env as its environment, and waits until it answers
// GET / as the Functions host would.
func startHandler(ctx context.Context, listener *os.File, baseURL string, env []string) (*handlerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: own executable: %w", err)
	}
	cmd := exec.Command(self, "-role=handler")
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{listener}
	cmd.Stderr = os.Stderr
	// Die with the parent: no orphan holding memory on a shared machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: handler stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start handler: %w", err)
	}
	p := &handlerProc{cmd: cmd, lines: make(chan procStats, 4), exited: make(chan struct{}), url: baseURL}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var s procStats
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				fmt.Fprintf(os.Stderr, "bench: handler said %q\n", sc.Text())
				continue
			}
			p.lines <- s
		}
		p.err = cmd.Wait()
		close(p.lines)
		close(p.exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

func (p *handlerProc) waitReady(ctx context.Context) error {
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET / answered %d", resp.StatusCode)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: handler not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snapshot asks the child for its statistics now.
func (p *handlerProc) snapshot() (procStats, error) {
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return procStats{}, fmt.Errorf("bench: signal handler: %w", err)
	}
	return p.next("snapshot")
}

func (p *handlerProc) next(kind string) (procStats, error) {
	select {
	case s, ok := <-p.lines:
		if !ok {
			return procStats{}, errors.New("bench: handler exited before reporting")
		}
		if s.Kind != kind {
			return procStats{}, fmt.Errorf("bench: handler reported %q, want %q", s.Kind, kind)
		}
		return s, nil
	case <-time.After(30 * time.Second):
		return procStats{}, fmt.Errorf("bench: handler did not report %s", kind)
	}
}

// stop asks the child to shut down as the host does (SIGTERM) and returns
// its final statistics.
func (p *handlerProc) stop() (procStats, error) {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return procStats{}, fmt.Errorf("bench: stop handler: %w", err)
	}
	s, err := p.next("final")
	if err != nil {
		p.kill()
		return s, err
	}
	select {
	case <-p.exited:
		if p.err != nil {
			return s, fmt.Errorf("bench: handler exited: %w", p.err)
		}
	case <-time.After(30 * time.Second):
		p.kill()
		return s, errors.New("bench: handler did not exit")
	}
	return s, nil
}

// kill ends the child at once unless it has exited (by its own process
// ID; for errors and clean-up).
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
