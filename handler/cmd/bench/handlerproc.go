//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devproc"
)

// handlerProc is a running handler child, seen from the parent: its
// statistics lines arrive on lines in order.
type handlerProc struct {
	*devproc.Child
	lines chan procStats
}

// startHandler re-executes this binary as a handler child serving on
// listener (which the parent keeps open, so every child answers on the same
// URL) with exactly env as its environment, and waits until it answers
// GET / as the Functions host would.
func startHandler(ctx context.Context, listener *os.File, baseURL string, env []string) (*handlerProc, error) {
	p := &handlerProc{lines: make(chan procStats, 4)}
	c, err := devproc.Start(ctx, devproc.Config{Name: "bench", Args: []string{"-role=handler"}, Env: env,
		Listener: listener, BaseURL: baseURL}, func(s procStats) { p.lines <- s })
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p.Child = c
	return p, nil
}

// snapshot asks the child for its statistics now.
func (p *handlerProc) snapshot() (procStats, error) {
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		return procStats{}, fmt.Errorf("bench: signal handler: %w", err)
	}
	s, err := p.next("snapshot")
	if err != nil {
		return s, fmt.Errorf("bench: %w", err)
	}
	return s, nil
}

func (p *handlerProc) next(kind string) (procStats, error) {
	var s procStats
	select {
	case s = <-p.lines:
	case <-p.Exited():
		// Every line it wrote is in p.lines by now.
		select {
		case s = <-p.lines:
		default:
			return procStats{}, errors.New("handler exited before reporting")
		}
	case <-time.After(30 * time.Second):
		return procStats{}, fmt.Errorf("handler did not report %s", kind)
	}
	if s.Kind != kind {
		return procStats{}, fmt.Errorf("handler reported %q, want %q", s.Kind, kind)
	}
	return s, nil
}

// stop asks the child to shut down as the host does (SIGTERM) and returns
// its final statistics.
func (p *handlerProc) stop() (procStats, error) {
	var s procStats
	err := p.Stop(func() (err error) {
		s, err = p.next("final")
		return err
	})
	if err != nil {
		return s, fmt.Errorf("bench: %w", err)
	}
	return s, nil
}
