package secrets

import (
	"context"
	"sync"
)

// flight lets concurrent readers of one key share one fetch. Unlike
// x/sync/singleflight's Do, each caller waits only as long as its own
// context allows, and the fetch runs on its own goroutine so no caller's
// cancellation aborts the read the others are waiting for.
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done chan struct{}
	val  Secret
	err  error
}

// do returns the result of fn, running it only if no call for key is in
// progress; otherwise it waits for the one that is.
func (f *flight) do(ctx context.Context, key string, fn func() (Secret, error)) (Secret, error) {
	f.mu.Lock()
	c, ok := f.calls[key]
	if !ok {
		if f.calls == nil {
			f.calls = map[string]*call{}
		}
		c = &call{done: make(chan struct{})}
		f.calls[key] = c
		go func() {
			c.val, c.err = fn()
			f.mu.Lock()
			delete(f.calls, key)
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		return Secret{}, ctx.Err()
	}
}
