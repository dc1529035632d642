package sweep

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// listAndWork runs the listing into a fixed pool of workers and returns
// when both are done: the listing's error, if it failed.
func (r *run) listAndWork() error {
	work := make(chan string, r.s.concurrency())
	var wg sync.WaitGroup
	for i := 0; i < r.s.concurrency(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(work)
		}()
	}
	err := r.list(work)
	close(work)
	wg.Wait()
	return err
}

// work refreshes the user IDs handed over until the channel closes. After
// a stop it drains the channel, counting what is left as skipped.
func (r *run) work(in <-chan string) {
	sum := &r.sum
	for userID := range in {
		if r.ctx.Err() != nil || r.pastDeadline() {
			atomic.AddInt64(&sum.Skipped, 1)
			continue
		}
		out, err := r.s.Tokens.RefreshIfDue(context.WithoutCancel(r.ctx), userID)
		switch out {
		case tokens.Refreshed:
			atomic.AddInt64(&sum.Refreshed, 1)
		case tokens.MarkedReconnect:
			atomic.AddInt64(&sum.ReconnectRequired, 1)
		case tokens.TransientFailure:
			atomic.AddInt64(&sum.TransientFailures, 1)
		case tokens.ConfigurationFailure:
			// Every further call would fail the same way: stop rather
			// than hammer Microsoft.
			atomic.AddInt64(&sum.TransientFailures, 1)
			r.stop(fmt.Errorf("%w: %w", errConfiguration, err))
		default:
			atomic.AddInt64(&sum.Skipped, 1)
		}
	}
}
