//go:build linux

package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/devproc"
)

// The handler child: this binary re-executed with -role=handler. It runs the
// product's composition root (app.Serve) on the listener the parent passes
// as file descriptor 3, with the settings the parent puts in its
// environment, exactly as the Functions host runs the handler. Its only
// additions are measurement: a RoundTripper around the one *http.Client
// the app hands to aztables (and msidentity), and a JSON line of process
// statistics on stdout on SIGUSR1 (snapshot) and at exit (final).

// Environment the parent sets for the child besides the handler settings.
const (
	envLog     = "BENCH_HANDLER_LOG" // the handler's zerolog output (a file)
	envProfile = "BENCH_CPU_PROFILE" // optional: write a CPU profile here
)

// procStats is one statistics line of a handler child.
type procStats struct {
	Kind string `json:"kind"` // "snapshot" or "final"
	// TableRequests counts HTTP requests sent to the Table service,
	// retries included (each attempt is a request the service must serve).
	TableRequests    int64                `json:"table_requests"`
	TableByKind      map[string]kindStats `json:"table_by_kind"`
	IdentityRequests int64                `json:"identity_requests"`
	OtherRequests    int64                `json:"other_requests"`
	VmHWMKiB         int64                `json:"vm_hwm_kib"`
	VmRSSKiB         int64                `json:"vm_rss_kib"`
	CPUUser          time.Duration        `json:"cpu_user_ns"`
	CPUSys           time.Duration        `json:"cpu_sys_ns"`
	NumGC            uint32               `json:"num_gc"`
	Goroutines       int                  `json:"goroutines"`
}

// kindStats is the count and response times of one kind of Table request
// (until the response headers: what the caller waits for before it can
// read the body).
type kindStats struct {
	N     int64         `json:"n"`
	Total time.Duration `json:"total_ns"`
	Max   time.Duration `json:"max_ns"`
	// Odd counts the answers that were not 2xx, and transport errors
	// (status 0), by status: conflicts, throttling, and what the SDK's
	// retry policy then sent again.
	Odd map[int]int64 `json:"odd,omitempty"`
}

// counter is an http.RoundTripper that counts requests by destination: the
// Table service, the identity platform (the stand-in), anything else.
type counter struct {
	next         http.RoundTripper
	tablesHost   string
	identityHost string

	tables, identity, other atomic.Int64

	mu     sync.Mutex
	byKind map[string]kindStats
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	switch r.URL.Host {
	case c.tablesHost:
		c.tables.Add(1)
		start := time.Now()
		resp, err := c.next.RoundTrip(r)
		d := time.Since(start)
		k := tableRequestKind(r)
		c.mu.Lock()
		ks := c.byKind[k]
		ks.N++
		ks.Total += d
		ks.Max = max(ks.Max, d)
		if status := statusOf(resp, err); status < 200 || status > 299 {
			if ks.Odd == nil {
				ks.Odd = map[int]int64{}
			}
			ks.Odd[status]++
		}
		c.byKind[k] = ks
		c.mu.Unlock()
		return resp, err
	case c.identityHost:
		c.identity.Add(1)
	default:
		c.other.Add(1)
	}
	return c.next.RoundTrip(r)
}

func statusOf(resp *http.Response, err error) int {
	if err != nil || resp == nil {
		return 0
	}
	return resp.StatusCode
}

// tableRequestKind names a Table REST call from its method and path
// (/<account>/Tables, /<account>/<table>, /<account>/<table>(PartitionKey=..)).
func tableRequestKind(r *http.Request) string {
	p := r.URL.Path
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		p = p[i+1:]
	}
	var what string
	switch {
	case strings.HasPrefix(p, "Tables"):
		what = "table"
	case strings.HasSuffix(p, "()") || !strings.Contains(p, "("):
		what = "rows" // query (GET <table>()) or insert (POST <table>)
	default:
		what = "entity" // one row: get, update, delete
	}
	return r.Method + " " + what
}

func (c *counter) stats(kind string) procStats {
	s := procStats{
		Kind:             kind,
		TableRequests:    c.tables.Load(),
		IdentityRequests: c.identity.Load(),
		OtherRequests:    c.other.Load(),
		TableByKind:      map[string]kindStats{},
		Goroutines:       runtime.NumGoroutine(),
	}
	c.mu.Lock()
	for k, v := range c.byKind {
		v.Odd = maps.Clone(v.Odd)
		s.TableByKind[k] = v
	}
	c.mu.Unlock()
	s.VmHWMKiB, _ = devproc.StatusKiB(devproc.SelfStatus, "VmHWM")
	s.VmRSSKiB, _ = devproc.StatusKiB(devproc.SelfStatus, "VmRSS")
	s.CPUUser, s.CPUSys = cpuOfSelf()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.NumGC = ms.NumGC
	return s
}

// tablesHost extracts the Table endpoint's host from a connection string.
func tablesHost(connectionString string) string {
	for part := range strings.SplitSeq(connectionString, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(k, "TableEndpoint") {
			if u, err := url.Parse(v); err == nil {
				return u.Host
			}
		}
	}
	return ""
}

func runHandlerChild() error {
	if path := os.Getenv(envProfile); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	var cnt *counter
	emit := func(kind string) { _ = devproc.Report(cnt.stats(kind)) }
	// Registered before the handler serves: SIGUSR1's default would end it.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	err := devproc.ServeHandler(devproc.HandlerChild{LogPath: os.Getenv(envLog), LogFlag: os.O_TRUNC,
		Measure: func(cfg config.Config, next *http.Transport) (http.RoundTripper, error) {
			authority, err := url.Parse(cfg.AuthorityHost)
			if err != nil {
				return nil, fmt.Errorf("MICROSOFT_AUTHORITY_HOST: %w", err)
			}
			cnt = &counter{next: next, tablesHost: tablesHost(cfg.TablesConnectionString),
				identityHost: authority.Host, byKind: map[string]kindStats{}}
			go func() {
				for range usr1 {
					emit("snapshot")
				}
			}()
			return cnt, nil
		}})
	signal.Stop(usr1)
	if cnt != nil {
		emit("final")
	}
	return err
}
