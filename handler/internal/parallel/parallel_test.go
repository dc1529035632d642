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
	var calls atomic.Int32
	var cancelled atomic.Bool
	err := For(t.Context(), 10000, 4, func(ctx context.Context, i int) error {
		calls.Add(1)
		switch i {
		case 0:
			// Running when index 1 fails (it went to another worker, this
			// one being busy): its ctx must end.
			select {
			case <-ctx.Done():
				cancelled.Store(true)
			case <-time.After(5 * time.Second):
			}
		case 1:
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("For = %v, want %v", err, boom)
	}
	if c := calls.Load(); c > 100 {
		t.Errorf("%d calls after the error, want the feed stopped", c)
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
