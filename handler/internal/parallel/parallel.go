// Package parallel runs one function over 0..n-1 on a bounded number of
// goroutines, stopping at the first error: how the development tools
// (handler/cmd/bench, handler/cmd/load) seed and check thousands of
// connections at once without a goroutine each.
//
// Development only: never packaged; the product does not import it.
package parallel

import (
	"context"
	"errors"
	"sync"
)

// For calls fn(ctx, i) for every i in 0..n-1 on at most workers goroutines
// and returns the first error fn returned. That error cancels the ctx the
// other calls get and stops handing out new indices; calls already running
// finish. When ctx ends first, For returns ctx.Err() once the running calls
// have returned.
func For(ctx context.Context, n, workers int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				// An index handed out as the error landed is dropped, not run.
				if ctx.Err() != nil {
					continue
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range n {
		// select picks at random when a worker is ready too: check first.
		if ctx.Err() != nil {
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
