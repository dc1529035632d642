// Package lifetime is the lifetime of a component's background work: work
// that outlives the request that started it (a fetch several callers
// share) runs on a context the component's Close cancels, and Close waits
// for it with a bound. app.Serve calls every Close after the HTTP server's
// Shutdown, within one shutdown bound.
package lifetime

import (
	"context"
	"sync"
)

// Group tracks one component's background work. The zero value is ready;
// it is safe for concurrent use.
type Group struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup // added to only under mu while not closed
}

func (g *Group) init() {
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
	}
}

// Go runs f on its own goroutine with a context that keeps parent's values
// but not its cancellation (the work serves callers other than the one
// that started it) and ends when Close starts. It returns false, and runs
// nothing, once Close was called.
func (g *Group) Go(parent context.Context, f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.init()
	g.wg.Add(1)
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(g.ctx, cancel)
	go func() {
		defer g.wg.Done()
		defer cancel()
		defer stop()
		f(ctx)
	}()
	return true
}

// Close cancels the work in flight, refuses new work, and waits for what
// runs to end, at most until ctx is done (then it returns ctx's error).
func (g *Group) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	g.init()
	g.mu.Unlock()
	g.cancel()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
