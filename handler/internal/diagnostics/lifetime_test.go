package diagnostics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
)

// ctxCredential holds CheckCredential until its context ends, and says so.
type ctxCredential struct {
	entered chan struct{}
	ended   chan error
}

func (c *ctxCredential) CheckCredential(ctx context.Context, _ string) error {
	c.entered <- struct{}{}
	<-ctx.Done()
	c.ended <- ctx.Err()
	return ctx.Err()
}

// Close cancels the shared computation (which outlives the caller that
// started it), returns only after it ended, and none starts after it.
func TestCloseCancelsAndWaitsForTheComputation(t *testing.T) {
	clk := clocktest.New(t0)
	s := newService(goodSettings(), clk, healthyTables(t0), nil)
	cred := &ctxCredential{entered: make(chan struct{}, 2), ended: make(chan error, 2)}
	s.Credential = cred

	caller, leave := context.WithCancel(context.Background())
	done := make(chan Report, 1)
	go func() { done <- s.Report(caller) }()
	select {
	case <-cred.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the computation never reached the credential check")
	}
	leave()
	<-done // the caller left; the computation goes on

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close = %v, want the computation cancelled and waited for", err)
	}
	select {
	case err := <-cred.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the check ended with %v, want context.Canceled", err)
		}
	default:
		t.Fatal("Close returned while the computation was still running")
	}
	clk.Advance(time.Hour)
	if r := s.Report(context.Background()); len(r.Checks) != 0 || r.OK {
		t.Errorf("Report after Close = %+v, want an empty, not-ok report", r)
	}
	if len(cred.entered) != 0 {
		t.Error("a computation started after Close")
	}
}
