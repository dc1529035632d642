//go:build linux

package main

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// outgoing wraps the handler's one HTTP client (the transport app builds,
// unchanged) to time every call to the Table service and to the stand-in,
// and every TCP dial: where the handler's time went when a request was
// slow.
type outgoing struct {
	next                     http.RoundTripper
	tablesHost, identityHost string

	mu    sync.Mutex
	calls map[string][]time.Duration // destination -> durations
	fails map[string]int
	dials map[string][]time.Duration // host:port -> dial durations
}

// destStats is one destination's summary in the child's final line.
type destStats struct {
	Requests int     `json:"requests"`
	Failures int     `json:"failures"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	Dials    int     `json:"dials"`
	DialMax  float64 `json:"dial_max_ms"`
}

func newOutgoing(tr *http.Transport, tablesConn, authority string) *outgoing {
	o := &outgoing{next: tr, calls: map[string][]time.Duration{}, fails: map[string]int{}, dials: map[string][]time.Duration{}}
	for part := range strings.SplitSeq(tablesConn, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(k, "TableEndpoint") {
			if u, err := url.Parse(v); err == nil {
				o.tablesHost = u.Host
			}
		}
	}
	if u, err := url.Parse(authority); err == nil {
		o.identityHost = u.Host
	}
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		t0 := time.Now()
		c, err := dial(ctx, network, addr)
		o.mu.Lock()
		o.dials[addr] = append(o.dials[addr], time.Since(t0))
		o.mu.Unlock()
		return c, err
	}
	return o
}

func (o *outgoing) dest(host string) string {
	switch host {
	case o.tablesHost:
		return "Table service (Azurite)"
	case o.identityHost:
		return "Microsoft stand-in"
	}
	return "other"
}

func (o *outgoing) RoundTrip(r *http.Request) (*http.Response, error) {
	t0 := time.Now()
	resp, err := o.next.RoundTrip(r)
	d := o.dest(r.URL.Host)
	o.mu.Lock()
	o.calls[d] = append(o.calls[d], time.Since(t0))
	if err != nil || resp.StatusCode >= 500 {
		o.fails[d]++
	}
	o.mu.Unlock()
	return resp, err
}

func (o *outgoing) stats() map[string]destStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]destStats{}
	for d, ds := range o.calls {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		out[d] = destStats{Requests: len(ds), Failures: o.fails[d],
			P50MS: msf(quantile(ds, 0.5)), P99MS: msf(quantile(ds, 0.99)), MaxMS: msf(quantile(ds, 1))}
	}
	for addr, ds := range o.dials {
		host := addr
		d := o.dest(host)
		s := out[d]
		s.Dials += len(ds)
		for _, x := range ds {
			s.DialMax = max(s.DialMax, msf(x))
		}
		out[d] = s
	}
	return out
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
