//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/devproc"
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
	s.RSSKiB, _ = devproc.StatusKiB(devproc.SelfStatus, "VmRSS")
	s.HWMKiB, _ = devproc.StatusKiB(devproc.SelfStatus, "VmHWM")
	return s
}

func runHandlerChild() error {
	every, err := time.ParseDuration(os.Getenv(envSample))
	if err != nil || every <= 0 {
		return fmt.Errorf("%s: %q", envSample, os.Getenv(envSample))
	}
	var out *outgoing
	emit := func(kind string) {
		s := takeSample(kind)
		if kind == "final" && out != nil {
			s.Outgoing = out.stats()
		}
		_ = devproc.Report(s)
	}
	done := make(chan struct{})
	err = devproc.ServeHandler(devproc.HandlerChild{LogPath: os.Getenv(envLog), LogFlag: os.O_APPEND,
		Measure: func(cfg config.Config, next *http.Transport) (http.RoundTripper, error) {
			out = newOutgoing(next, cfg.TablesConnectionString, cfg.AuthorityHost)
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
			return out, nil
		}})
	close(done)
	emit("final")
	return err
}

// handlerProc is the running child, seen from the parent: its samples so
// far, and its last line once it has stopped.
type handlerProc struct {
	*devproc.Child

	mu      sync.Mutex
	samples []memSample
	final   chan memSample
}

func startHandler(ctx context.Context, listener *os.File, baseURL string, env []string) (*handlerProc, error) {
	p := &handlerProc{final: make(chan memSample, 1)}
	c, err := devproc.Start(ctx, devproc.Config{Name: "load", Args: []string{"-role=handler"}, Env: env,
		Listener: listener, BaseURL: baseURL}, p.receive)
	if err != nil {
		return nil, err
	}
	p.Child = c
	return p, nil
}

func (p *handlerProc) receive(s memSample) {
	if s.Kind == "final" {
		p.final <- s
		return
	}
	p.mu.Lock()
	p.samples = append(p.samples, s)
	p.mu.Unlock()
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
	var s memSample
	err := p.Stop(func() error {
		select {
		case s = <-p.final:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("the handler did not report at exit")
		}
	})
	return s, err
}
