package parallel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestForCallsEveryIndexOnce(t *testing.T) {
	const n = 1000
	var seen [n]atomic.Int32
	var running, most atomic.Int32
	err := For(t.Context(), n, 7, func(_ context.Context, i int) error {
		r := running.Add(1)
		for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
		}
		seen[i].Add(1)
		running.Add(-1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if c := seen[i].Load(); c != 1 {
			t.Fatalf("index %d called %d times", i, c)
		}
	}
	if m := most.Load(); m > 7 {
		t.Errorf("%d calls at once, want at most 7 workers", m)
	}
}

func TestForNothingToDo(t *testing.T) {
	if err := For(t.Context(), 0, 4, func(context.Context, int) error { panic("called") }); err != nil {
		t.Fatal(err)
	}
}

func TestForStopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	var after atomic.Int32 // calls that started once the error had cancelled ctx
	var cancelled atomic.Bool
	running0 := make(chan struct{})
	err := For(t.Context(), 10000, 4, func(ctx context.Context, i int) error {
		if ctx.Err() != nil {
			after.Add(1)
		}
		switch i {
		case 0:
			// Running when index 1 fails (it went to another worker, this
			// one being busy): its ctx must end.
			close(running0)
			select {
			case <-ctx.Done():
				cancelled.Store(true)
			case <-time.After(5 * time.Second):
			}
		case 1:
			<-running0 // fail only once index 0 is surely running
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("For = %v, want %v", err, boom)
	}
	// Once the error has cancelled ctx no index is handed out and no
	// worker starts a call, except one that had already passed its check
	// (at most one per other worker). Without the checks, the random
	// select in the feed and the workers' loops start thousands more.
	if c := after.Load(); c > 3 {
		t.Errorf("%d calls started after the error cancelled ctx, want at most 3 (one per other worker)", c)
	}
	if !cancelled.Load() {
		t.Error("the running call's ctx was not cancelled")
	}
}

func TestForReturnsContextError(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	err := For(ctx, 10000, 2, func(ctx context.Context, i int) error {
		if i == 5 {
			cancel()
		}
		return ctx.Err() // context.Canceled: not an error of fn's own
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("For = %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err = For(ctx, 1000, 2, func(ctx context.Context, i int) error {
		<-ctx.Done()
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("For = %v, want context.DeadlineExceeded", err)
	}
}
