//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/sweep"
)

// newLoopbackClient is a keep-alive client for up to conns parallel
// requests to one loopback host.
func newLoopbackClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}
}

// timerBody is what the Functions host POSTs to /refresh for a timer
// trigger (the shape of funchost's golden testdata).
func timerBody(now time.Time) []byte {
	ts := now.UTC().Format(time.RFC3339Nano)
	return fmt.Appendf(nil, `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":%q,"Next":%q,"LastUpdated":%q},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"refresh","UtcNow":%q,"RandGuid":"00000000-0000-4000-8000-000000000000"}}}`,
		ts, now.Add(5*time.Minute).UTC().Format(time.RFC3339), ts, ts)
}

// invokeTimer sends one timer invocation and returns the sweep's summary
// and the wall time of the whole invocation as the host would see it.
func invokeTimer(ctx context.Context, baseURL string) (sweep.Summary, time.Duration, error) {
	c := newLoopbackClient(1, 10*time.Minute)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/refresh", bytes.NewReader(timerBody(time.Now())))
	if err != nil {
		return sweep.Summary{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", randomString(16))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return sweep.Summary{}, 0, fmt.Errorf("bench: POST /refresh: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	wall := time.Since(start)
	if err != nil {
		return sweep.Summary{}, wall, fmt.Errorf("bench: POST /refresh: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return sweep.Summary{}, wall, fmt.Errorf("bench: POST /refresh answered %d: %s", resp.StatusCode, body)
	}
	var out struct {
		ReturnValue *sweep.Summary `json:"ReturnValue"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.ReturnValue == nil {
		return sweep.Summary{}, wall, fmt.Errorf("bench: POST /refresh: no ReturnValue in %s", body)
	}
	return *out.ReturnValue, wall, nil
}

// latencies is one load run's outcome.
type latencies struct {
	Workers, Calls int
	Errors         int64
	FirstError     string
	Wall           time.Duration
	P50, P90, P99  time.Duration
	Max, Mean      time.Duration
}

// tokenLoad makes calls POST /api/connections/{id}/token requests from
// workers closed-loop callers (each sends its next request when the last
// answered), cycling over users, and measures each from sending to the
// last byte of the body. Only a 200 with an access token counts as a
// success; failures are counted and excluded from the percentiles.
func tokenLoad(ctx context.Context, c *http.Client, baseURL, cmsKey string, users []string, calls, workers int, notBefore time.Time) latencies {
	out := latencies{Workers: workers, Calls: calls}
	per := make([][]time.Duration, workers)
	var next atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, calls/workers+1)
			for {
				i := int(next.Add(1)) - 1
				if i >= calls || ctx.Err() != nil {
					break
				}
				d, err := tokenCall(ctx, c, baseURL, cmsKey, users[i%len(users)], notBefore)
				if err != nil {
					atomic.AddInt64(&out.Errors, 1)
					errOnce.Do(func() { out.FirstError = err.Error() })
					continue
				}
				mine = append(mine, d)
			}
			per[w] = mine
		}()
	}
	wg.Wait()
	out.Wall = time.Since(start)
	all := slices.Concat(per...)
	if len(all) == 0 {
		return out
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	out.Mean = sum / time.Duration(len(all))
	out.P50, out.P90, out.P99 = percentile(all, 50), percentile(all, 90), percentile(all, 99)
	out.Max = all[len(all)-1]
	return out
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func tokenCall(ctx context.Context, c *http.Client, baseURL, cmsKey, user string, notBefore time.Time) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/api/connections/"+url.PathEscape(user)+"/token", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+cmsKey)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("user %s: %d %s", user, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var tok struct {
		AccessToken string    `json:"access_token"`
		ExpiresAt   time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return 0, fmt.Errorf("user %s: no access token in the answer", user)
	}
	if tok.ExpiresAt.Before(notBefore) {
		// It should not have been due; the run would measure refreshes.
		return 0, fmt.Errorf("user %s: token expires at %s, inside the refresh margin", user, tok.ExpiresAt)
	}
	return d, nil
}

// refreshCount is the stand-in's count of refresh_token grants so far.
func refreshCount(idp *devidp.Server) int { return idp.TokenRequests("refresh_token") }
