package msidentity

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// Close cancels a discovery fetch that outlived the exchange that started
// it, waits for it, and no fetch starts after it.
func TestCloseEndsTheDiscoveryFetch(t *testing.T) {
	entered, ended := make(chan struct{}, 2), make(chan error, 2)
	srv := newStandInDiscovery(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
		ended <- r.Context().Err()
	}, func(w http.ResponseWriter, r *http.Request) {
		t.Error("the code was sent")
	})
	c := newTestClient(t, srv.URL)
	caller, leave := context.WithCancel(context.Background())
	exchanged := make(chan error, 1)
	go func() {
		_, err := c.Exchange(caller, "code", "verifier")
		exchanged <- err
	}()
	<-entered
	leave()
	if err := <-exchanged; !errors.Is(err, context.Canceled) {
		t.Fatalf("Exchange = %v, want the caller's cancellation", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the discovery fetch was not cancelled by Close")
	}
	var de *DiscoveryError
	if _, err := c.Exchange(context.Background(), "code", "verifier"); !errors.As(err, &de) {
		t.Errorf("Exchange after Close = %v, want a *DiscoveryError", err)
	}
	if n := srv.discoveries.Load(); n != 1 {
		t.Errorf("%d discovery fetches, want 1 (none after Close)", n)
	}
}
