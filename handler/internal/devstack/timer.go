package devstack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Sweep plays the Functions host's timer once: POST /refresh with the
// host's invocation body (the shape of funchost's golden testdata). It
// returns an error unless the handler answers 200.
func (s *Stack) Sweep(ctx context.Context) error {
	now := s.clock().UTC()
	ts := now.Format(time.RFC3339Nano)
	body := fmt.Appendf(nil, `{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":%q,"Next":%q,"LastUpdated":%q},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"refresh","UtcNow":%q,"RandGuid":"00000000-0000-4000-8000-000000000000"}}}`,
		ts, now.Add(5*time.Minute).Format(time.RFC3339), ts, ts)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.HandlerURL+"/refresh", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("devstack: sweep: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("devstack: sweep: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devstack: sweep: POST /refresh answered %d", resp.StatusCode)
	}
	return nil
}

// runTimer sweeps at once and then every interval until ctx ends, as the
// host's timer does on REFRESH_SCHEDULE (every 5 minutes by default), so
// the local stack's diagnostics see a recent sweep. Errors are the
// handler's to log.
func (s *Stack) runTimer(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		_ = s.Sweep(sctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
