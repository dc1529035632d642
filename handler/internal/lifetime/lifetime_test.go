package lifetime

import (
	"context"
	"errors"
	"testing"
	"time"
)

type key struct{}

// Work keeps its starter's values, not its cancellation; Close cancels it
// and returns only after it ended; nothing starts after Close.
func TestCloseCancelsAndWaits(t *testing.T) {
	var g Group
	parent, leave := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	entered, ended := make(chan any, 1), make(chan error, 1)
	if !g.Go(parent, func(ctx context.Context) {
		entered <- ctx.Value(key{})
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // still running after the cancel
		ended <- ctx.Err()
	}) {
		t.Fatal("Go refused work before Close")
	}
	if v := <-entered; v != "v" {
		t.Errorf("value = %v, want the starter's", v)
	}
	leave()
	select {
	case <-ended:
		t.Fatal("the starter's cancellation ended the work")
	case <-time.After(20 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("work ended with %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Close returned before the work ended")
	}
	if g.Go(context.Background(), func(context.Context) { t.Error("work ran after Close") }) {
		t.Error("Go accepted work after Close")
	}
}

// Close's bound holds against work that ignores its context.
func TestCloseBound(t *testing.T) {
	var g Group
	release := make(chan struct{})
	defer close(release)
	g.Go(context.Background(), func(context.Context) { <-release })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := g.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want its bound's error", err)
	}
}

// A zero Group closes at once.
func TestCloseEmpty(t *testing.T) {
	var g Group
	if err := g.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
