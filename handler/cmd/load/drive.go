//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/megdocs/msconnector/handler/internal/sweep"
)

// The operations of the mix, and the timer sweep.
const (
	opSession = iota // POST /api/connect-sessions
	opStatus         // GET /api/connections/{user_id}
	opToken          // POST /api/connections/{user_id}/token
	opSweep          // POST /refresh (the timer)
	numOps
)

var opNames = [numOps]string{"POST /api/connect-sessions", "GET /api/connections/{id}", "POST /api/connections/{id}/token", "POST /refresh (sweep)"}

// mix is the share of each client operation, in percent: the token API is
// what a CMS calls most; status reads next; new connect sessions least.
var mix = [opSweep]int{opSession: 15, opStatus: 35, opToken: 50}

// result is one request's outcome.
type result struct {
	op     int
	status int // 0: transport error
	at     time.Duration
	took   time.Duration
}

type runResult struct {
	start    time.Time
	duration time.Duration // until the last request finished
	results  []result
	sweeps   sweep.Summary  // the timer's ReturnValues, summed
	errs     map[string]int // transport error text -> count (first few words)
}

// drive runs o.clients clients until o.duration has passed, and sweeps
// back to back meanwhile. Requests in flight at the deadline finish (each
// is bounded by the client's timeout); none start after it.
func drive(ctx context.Context, o options, baseURL, cmsKey string, users []string, timerPayload []byte, child *handlerProc) runResult {
	hc := cmsClient(o.clients, 60*time.Second)
	defer hc.CloseIdleConnections()
	// The host waits for a timer invocation up to host.json's
	// functionTimeout (10 minutes); the sweep itself stops starting work at
	// REFRESH_DEADLINE (4 minutes).
	host := cmsClient(1, 10*time.Minute)
	defer host.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(o.duration)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var mu sync.Mutex
	run := runResult{start: start, errs: map[string]int{}}
	record := func(rs []result, errs map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		run.results = append(run.results, rs...)
		for k, v := range errs {
			run.errs[k] += v
		}
	}

	var wg sync.WaitGroup
	for c := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 0x5eed))
			var rs []result
			errs := map[string]int{}
			for ctx.Err() == nil {
				op := pick(rng)
				user := users[rng.IntN(len(users))]
				var req *http.Request
				switch op {
				case opSession:
					body, _ := json.Marshal(map[string]string{"user_id": user, "return_url": returnURL})
					req, _ = http.NewRequest(http.MethodPost, baseURL+"/api/connect-sessions", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
				case opStatus:
					req, _ = http.NewRequest(http.MethodGet, baseURL+"/api/connections/"+url.PathEscape(user), nil)
				case opToken:
					req, _ = http.NewRequest(http.MethodPost, baseURL+"/api/connections/"+url.PathEscape(user)+"/token", nil)
				}
				req.Header.Set("Authorization", "Bearer "+cmsKey)
				rs = append(rs, do(hc, req, op, start, errs))
			}
			record(rs, errs)
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		var rs []result
		errs := map[string]int{}
		for ctx.Err() == nil {
			req, _ := http.NewRequest(http.MethodPost, baseURL+"/refresh", bytes.NewReader(timerPayload))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Azure-Functions-InvocationId", fmt.Sprintf("load-sweep-%d", len(rs)+1))
			req.Header.Set("User-Agent", "Azure-Functions-Host/4")
			r, body := doBody(host, req, opSweep, start, errs)
			rs = append(rs, r)
			if r.status == http.StatusOK {
				var out struct{ ReturnValue sweep.Summary }
				if err := json.Unmarshal(body, &out); err == nil {
					mu.Lock()
					run.sweeps.Due += out.ReturnValue.Due
					run.sweeps.Refreshed += out.ReturnValue.Refreshed
					run.sweeps.ReconnectRequired += out.ReturnValue.ReconnectRequired
					run.sweeps.TransientFailures += out.ReturnValue.TransientFailures
					run.sweeps.Skipped += out.ReturnValue.Skipped
					mu.Unlock()
				}
			}
		}
		record(rs, errs)
	}()

	// Progress while it runs.
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s := child.samplesSince(time.Now().Add(-o.sampleEvery - time.Second))
				rss := int64(0)
				if len(s) > 0 {
					rss = s[len(s)-1].RSSKiB
				}
				progress("%s elapsed, handler RSS %.1f MiB", time.Since(start).Round(time.Second), float64(rss)/1024)
			}
		}
	}()
	wg.Wait()
	run.duration = time.Since(start)
	return run
}

func pick(rng *rand.Rand) int {
	n := rng.IntN(100)
	for op := range opSweep {
		if n < mix[op] {
			return op
		}
		n -= mix[op]
	}
	return opToken
}

func do(hc *http.Client, req *http.Request, op int, start time.Time, errs map[string]int) result {
	r, _ := doBody(hc, req, op, start, errs)
	return r
}

// doBody sends req (never with the run's context: a request started before
// the deadline finishes) and reads the whole answer.
func doBody(hc *http.Client, req *http.Request, op int, start time.Time, errs map[string]int) (result, []byte) {
	t0 := time.Now()
	r := result{op: op, at: t0.Sub(start)}
	resp, err := hc.Do(req)
	if err != nil {
		r.took = time.Since(t0)
		errs[shortErr(err)]++
		return r, nil
	}
	body, err := drain(resp.Body)
	r.took = time.Since(t0)
	if err != nil {
		errs[shortErr(err)]++
		return r, nil
	}
	r.status = resp.StatusCode
	return r, body
}

// shortErr keeps an error's text short enough to group by.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the URL, which names the user
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
