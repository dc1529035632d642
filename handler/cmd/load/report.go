//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

type report struct {
	opts                  options
	started, finished     time.Time
	loadBefore, loadAfter string
	seedTime              time.Duration
	run                   runResult
	memory                []memSample
	final                 memSample
	data                  dataCheck
	logEvents             map[string]int             // "level event" -> lines
	handlerTimes          map[string][]time.Duration // route -> duration_ms of its request lines
}

// growth compares the mean of the last third of the run's samples with the
// middle third's: the first third is warm-up (connection pools, caches,
// the heap growing to its working size).
type growth struct {
	middleHeap, lastHeap, middleRSS, lastRSS float64
	samples                                  [2]int
}

func (g growth) heapRatio() float64 { return ratioOf(g.lastHeap, g.middleHeap) }
func (g growth) rssRatio() float64  { return ratioOf(g.lastRSS, g.middleRSS) }

func ratioOf(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a/b - 1
}

func (r *report) growth() growth {
	var g growth
	// Thirds of the clients' run: the tail where only the last sweep
	// finishes would flatter the last third.
	d := r.opts.duration
	for _, s := range r.memory {
		at := s.At.Sub(r.run.start)
		switch {
		case at >= d/3 && at < 2*d/3:
			g.middleHeap += float64(s.HeapInuse)
			g.middleRSS += float64(s.RSSKiB)
			g.samples[0]++
		case at >= 2*d/3 && at <= d:
			g.lastHeap += float64(s.HeapInuse)
			g.lastRSS += float64(s.RSSKiB)
			g.samples[1]++
		}
	}
	if g.samples[0] > 0 {
		g.middleHeap /= float64(g.samples[0])
		g.middleRSS /= float64(g.samples[0])
	}
	if g.samples[1] > 0 {
		g.lastHeap /= float64(g.samples[1])
		g.lastRSS /= float64(g.samples[1])
	}
	return g
}

// status counts per operation.
func (r *report) counts() (byOp [numOps]map[int]int) {
	for i := range byOp {
		byOp[i] = map[int]int{}
	}
	for _, x := range r.run.results {
		byOp[x.op][x.status]++
	}
	return byOp
}

func (r *report) fiveXX() (n int) {
	for _, x := range r.run.results {
		if x.status >= 500 {
			n++
		}
	}
	return n
}

func (r *report) transportErrors() (n int) {
	for _, v := range r.run.errs {
		n += v
	}
	return n
}

func (r *report) passed() bool {
	g := r.growth()
	d := r.data
	n := r.opts.connections
	return r.fiveXX() == 0 && r.transportErrors() == 0 &&
		d.Stored == n && d.Connected == n && d.Accepted == n && d.Newest == n &&
		g.samples[0] >= 2 && g.samples[1] >= 2 &&
		g.heapRatio() <= r.opts.growthLimit && g.rssRatio() <= r.opts.growthLimit
}

func (r *report) render() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.opts
	p("\n# Load test\n\n")
	p("`make load` (go run ./handler/cmd/load -duration %s) on %s, %d CPUs, %s.\n", o.duration, r.started.UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.Version())
	p("Load average before %s, after %s (the machine is shared).\n\n", r.loadBefore, r.loadAfter)
	p("- %d users connected through the connect flow first (%s), IDs like %q.\n", o.connections, r.seedTime.Round(time.Millisecond), userID(0))
	p("- %d concurrent CMS clients for %s (ran %s): %d%% connect sessions, %d%% status reads, %d%% token calls, users uniformly at random.\n",
		o.clients, o.duration, r.run.duration.Round(time.Millisecond), mix[opSession], mix[opStatus], mix[opToken])
	p("- Timer sweeps back to back meanwhile (POST /refresh, the host's payload). Access tokens live %s, so every\n", o.expiresIn)
	p("  connection is due for every sweep (REFRESH_LOOKAHEAD 10m) and the token API refreshes tokens older than %s.\n", o.expiresIn-5*time.Minute)
	p("- The handler under load is a child process (app.Serve); Azurite and the stand-in are separate.\n\n")

	// Throughput and latency.
	counts := r.counts()
	lat := [numOps][]time.Duration{}
	for _, x := range r.run.results {
		lat[x.op] = append(lat[x.op], x.took)
	}
	// Rates over the clients' run (requests in flight at its end finish
	// and are counted; the last sweep may run on a little longer).
	secs := r.opts.duration.Seconds()
	p("## Throughput and latency\n\n")
	p("| operation | requests | per second | p50 | p99 | max | 2xx | 4xx | 5xx | transport errors |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	total := 0
	for op := range numOps {
		d := lat[op]
		slices.Sort(d)
		c := counts[op]
		var ok, four, five int
		for st, n := range c {
			switch {
			case st >= 200 && st < 300:
				ok += n
			case st >= 400 && st < 500:
				four += n
			case st >= 500:
				five += n
			}
		}
		total += len(d)
		p("| %s | %d | %.1f | %s | %s | %s | %d | %d | %d | %d |\n", opNames[op], len(d), float64(len(d))/secs,
			ms(quantile(d, 0.50)), ms(quantile(d, 0.99)), ms(quantile(d, 1)), ok, four, five, c[0])
	}
	p("| **all** | %d | %.1f | | | | | | %d | %d |\n\n", total, float64(total)/secs, r.fiveXX(), r.transportErrors())

	p("Responses by status:\n\n| operation | status | count |\n|---|---:|---:|\n")
	for op := range numOps {
		for _, st := range slices.Sorted(maps.Keys(counts[op])) {
			name := fmt.Sprint(st)
			if st == 0 {
				name = "transport error"
			}
			p("| %s | %s | %d |\n", opNames[op], name, counts[op][st])
		}
	}
	p("\n")
	if len(r.run.errs) > 0 {
		p("Transport errors:\n\n| error | count |\n|---|---:|\n")
		for _, k := range slices.Sorted(maps.Keys(r.run.errs)) {
			p("| `%s` | %d |\n", k, r.run.errs[k])
		}
		p("\n")
	}
	if len(r.handlerTimes) > 0 {
		p("Time inside the handler (its own `request` log lines, `duration_ms`), for comparison with what the clients saw:\n\n")
		p("| route | requests | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
		for _, k := range slices.Sorted(maps.Keys(r.handlerTimes)) {
			d := r.handlerTimes[k]
			slices.Sort(d)
			p("| %s | %d | %s | %s | %s |\n", k, len(d), ms(quantile(d, 0.50)), ms(quantile(d, 0.99)), ms(quantile(d, 1)))
		}
		p("\n")
	}
	if len(r.final.Outgoing) > 0 {
		p("The handler's own calls out (timed on its HTTP client):\n\n| destination | requests | 5xx or failed | p50 | p99 | max | TCP dials | slowest dial |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, k := range slices.Sorted(maps.Keys(r.final.Outgoing)) {
			o := r.final.Outgoing[k]
			p("| %s | %d | %d | %.1f ms | %.1f ms | %.1f ms | %d | %.1f ms |\n", k, o.Requests, o.Failures, o.P50MS, o.P99MS, o.MaxMS, o.Dials, o.DialMax)
		}
		p("\n")
	}
	slow := slices.Clone(r.run.results)
	slices.SortFunc(slow, func(a, b result) int { return int(b.took - a.took) })
	p("Slowest requests as the clients saw them:\n\n| operation | started at | took | status |\n|---|---:|---:|---:|\n")
	for _, x := range slow[:min(len(slow), 8)] {
		p("| %s | %.1fs | %s | %d |\n", opNames[x.op], x.at.Seconds(), ms(x.took), x.status)
	}
	p("\n")
	sw := r.run.sweeps
	p("Sweeps: %d, which refreshed %d of %d due (reconnect_required %d, transient failures %d, skipped %d).\n\n",
		len(lat[opSweep]), sw.Refreshed, sw.Due, sw.ReconnectRequired, sw.TransientFailures, sw.Skipped)

	// Memory.
	p("## Handler memory over time\n\n")
	p("Sampled in the handler process every %s (runtime.MemStats, /proc/self/status); requests/s is over the interval before the sample.\n\n", o.sampleEvery)
	p("| t | requests/s | VmRSS | HeapInuse | HeapAlloc | Sys | goroutines | GCs |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	prev := time.Duration(0)
	for _, s := range r.memory {
		at := s.At.Sub(r.run.start)
		n := 0
		for _, x := range r.run.results {
			if x.at+x.took > prev && x.at+x.took <= at {
				n++
			}
		}
		rate := 0.0
		if at > prev {
			rate = float64(n) / (at - prev).Seconds()
		}
		prev = at
		p("| %.0fs | %.0f | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %d | %d |\n", at.Seconds(), rate,
			float64(s.RSSKiB)/1024, mib(s.HeapInuse), mib(s.HeapAlloc), mib(s.Sys), s.Goroutines, s.NumGC)
	}
	g := r.growth()
	p("\nPeak RSS (VmHWM) %.1f MiB; at exit VmRSS %.1f MiB, %d goroutines.\n\n", float64(r.final.HWMKiB)/1024, float64(r.final.RSSKiB)/1024, r.final.Goroutines)
	p("| once warm | middle third (%d samples) | last third (%d samples) | change | limit |\n|---|---:|---:|---:|---:|\n", g.samples[0], g.samples[1])
	p("| HeapInuse (mean) | %.1f MiB | %.1f MiB | %+.1f%% %s | %+.0f%% |\n", g.middleHeap/(1<<20), g.lastHeap/(1<<20), 100*g.heapRatio(), mark(g.heapRatio() <= o.growthLimit), 100*o.growthLimit)
	p("| VmRSS (mean) | %.1f MiB | %.1f MiB | %+.1f%% %s | %+.0f%% |\n\n", g.middleRSS/1024, g.lastRSS/1024, 100*g.rssRatio(), mark(g.rssRatio() <= o.growthLimit), 100*o.growthLimit)

	// Data.
	d := r.data
	n := o.connections
	p("## Data after the run\n\n| check | result | expected |\n|---|---:|---:|\n")
	p("| seeded connections still stored | %d %s | %d |\n", d.Stored, mark(d.Stored == n), n)
	p("| status connected | %d %s | %d |\n", d.Connected, mark(d.Connected == n), n)
	p("| stored refresh token is the newest of its chain (no rotation lost) | %d %s | %d |\n", d.Newest, mark(d.Newest == n), n)
	p("| stored refresh token still accepted by the stand-in | %d %s | %d |\n\n", d.Accepted, mark(d.Accepted == n), n)
	if len(d.Missing) > 0 {
		p("Missing: %q\n\n", d.Missing[:min(len(d.Missing), 10)])
	}

	p("Handler log lines at warn or error level: ")
	if len(r.logEvents) == 0 {
		p("none.\n\n")
	} else {
		p("\n\n| level event | lines |\n|---|---:|\n")
		for _, k := range slices.Sorted(maps.Keys(r.logEvents)) {
			p("| %s | %d |\n", k, r.logEvents[k])
		}
		p("\n")
	}
	verdict := "PASS"
	if !r.passed() {
		verdict = "FAIL"
	}
	p("**%s**: %d 5xx (want 0), %d transport errors (want 0), data lost: %d connections, %d stale refresh tokens (want 0), memory once warm %+.1f%% heap / %+.1f%% RSS (limit %+.0f%%).\n",
		verdict, r.fiveXX(), r.transportErrors(), n-d.Stored, n-d.Newest, 100*g.heapRatio(), 100*g.rssRatio(), 100*o.growthLimit)
	return b.String()
}

// readHandlerLog counts the handler's warn and error lines by event, and
// collects the time the handler itself spent on each request (its
// "request" lines' duration_ms), by route.
func readHandlerLog(path string) (map[string]int, map[string][]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	events := map[string]int{}
	times := map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m struct {
			Level      string  `json:"level"`
			Event      string  `json:"event"`
			Class      string  `json:"class"`
			Method     string  `json:"method"`
			Route      string  `json:"route"`
			DurationMS float64 `json:"duration_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if m.Event == "request" {
			k := m.Route
			if !strings.HasPrefix(k, m.Method+" ") {
				k = m.Method + " " + k
			}
			times[k] = append(times[k], time.Duration(m.DurationMS*float64(time.Millisecond)))
		}
		if m.Level != "warn" && m.Level != "error" {
			continue
		}
		k := m.Level + " " + m.Event
		if m.Class != "" {
			k += " (" + m.Class + ")"
		}
		events[k]++
	}
	return events, times, sc.Err()
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}
