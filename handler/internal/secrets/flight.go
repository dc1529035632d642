package secrets

import (
	"context"
	"errors"
	"sync"

	"github.com/megdocs/msconnector/handler/internal/lifetime"
)

// flight lets concurrent readers of one key share one fetch. Unlike
// x/sync/singleflight's Do, each caller waits only as long as its own
// context allows, and the fetch runs on its own goroutine so no caller's
// cancellation aborts the read the others are waiting for. The fetch's
// lifetime is the KeyVault's: close cancels it and waits.
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
	life  lifetime.Group
}

type call struct {
	done chan struct{}
	val  Secret
	err  error
}

// errClosed answers a read that needs Key Vault after Close.
var errClosed = errors.New("secrets: key vault: closed")

// do returns the result of fn, running it only if no call for key is in
// progress; otherwise it waits for the one that is. fn gets ctx's values
// on a context that ends only when the flight is closed.
func (f *flight) do(ctx context.Context, key string, fn func(context.Context) (Secret, error)) (Secret, error) {
	f.mu.Lock()
	c, ok := f.calls[key]
	if !ok {
		c = &call{done: make(chan struct{})}
		started := f.life.Go(ctx, func(fctx context.Context) {
			c.val, c.err = fn(fctx)
			f.mu.Lock()
			delete(f.calls, key)
			f.mu.Unlock()
			close(c.done)
		})
		if !started {
			f.mu.Unlock()
			return Secret{}, errClosed
		}
		if f.calls == nil {
			f.calls = map[string]*call{}
		}
		f.calls[key] = c
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return Secret{}, ctx.Err()
	}
}

// close cancels the fetches in flight and waits for them within ctx.
func (f *flight) close(ctx context.Context) error { return f.life.Close(ctx) }
