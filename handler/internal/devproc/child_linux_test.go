package devproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests start this test binary again as the child: TestMain runs
// testChild instead of the tests when envMode says how to behave.
const envMode = "DEVPROC_TEST_CHILD"

type testReport struct {
	Kind string `json:"kind"`
	N    int    `json:"n"`
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(envMode); mode != "" {
		os.Exit(testChild(mode))
	}
	os.Exit(m.Run())
}

// testChild serves GET / on the inherited listener, reports on SIGUSR1 and
// at SIGTERM, and exits 0 ("serve") or 3 ("fail"); "deaf" never serves.
func testChild(mode string) int {
	ln, err := InheritedListener()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if mode == "deaf" {
		time.Sleep(time.Minute)
		return 1
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("not a report") // goes to stderr, named
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	}()
	n := 0
	for {
		select {
		case <-usr1:
			n++
			_ = Report(testReport{Kind: "snapshot", N: n})
		case <-term:
			_ = Report(testReport{Kind: "final", N: n})
			if mode == "fail" {
				return 3
			}
			return 0
		}
	}
}

// startChild starts a test child in mode with its reports on the returned
// channel.
func startChild(t *testing.T, ctx context.Context, mode string) (*Child, chan testReport, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	reports := make(chan testReport, 4)
	c, err := Start(ctx, Config{
		Name: "devproc test", Args: []string{"-test.run=^$"},
		Env:      append(os.Environ(), envMode+"="+mode),
		Listener: f, BaseURL: "http://" + ln.Addr().String(),
	}, func(r testReport) { reports <- r })
	if c != nil {
		t.Cleanup(c.Kill)
	}
	return c, reports, err
}

func receive(t *testing.T, reports chan testReport, kind string) (testReport, error) {
	t.Helper()
	select {
	case r := <-reports:
		if r.Kind != kind {
			return r, fmt.Errorf("report %q, want %q", r.Kind, kind)
		}
		return r, nil
	case <-time.After(10 * time.Second):
		return testReport{}, fmt.Errorf("no %s report", kind)
	}
}

func TestChildReportsAndStops(t *testing.T) {
	c, reports, err := startChild(t, t.Context(), "serve")
	if err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		if err := c.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		if r, err := receive(t, reports, "snapshot"); err != nil || r.N != want {
			t.Fatalf("snapshot %d: %+v, %v", want, r, err)
		}
	}
	var final testReport
	if err := c.Stop(func() (err error) { final, err = receive(t, reports, "final"); return err }); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if final.N != 2 {
		t.Errorf("final report %+v", final)
	}
	select {
	case <-c.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}

	// Kill of a child that has exited: a no-op, at once.
	start := time.Now()
	c.Kill()
	c.Kill()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Kill after exit took %s", d)
	}
	if err := c.Signal(syscall.SIGUSR1); err == nil {
		t.Error("Signal to an exited child succeeded")
	}
}

func TestStopReportsExitStatus(t *testing.T) {
	c, reports, err := startChild(t, t.Context(), "fail")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Stop(func() error { _, err := receive(t, reports, "final"); return err })
	if err == nil || !strings.Contains(err.Error(), "handler exited: exit status 3") {
		t.Fatalf("Stop = %v, want the exit status", err)
	}
}

func TestStopKillsWhenFinalFails(t *testing.T) {
	c, _, err := startChild(t, t.Context(), "serve")
	if err != nil {
		t.Fatal(err)
	}
	errNoFinal := errors.New("no final report")
	if err := c.Stop(func() error { return errNoFinal }); err != errNoFinal {
		t.Fatalf("Stop = %v, want the final function's error as it is", err)
	}
	select {
	case <-c.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("child still running after Stop failed")
	}
}

func TestKillRunningChild(t *testing.T) {
	c, _, err := startChild(t, t.Context(), "serve")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill()
	select {
	case <-c.Exited():
	default:
		t.Fatal("Kill returned before the child was reaped")
	}
}

func TestStartGivesUpWhenNotReady(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, _, err := startChild(t, ctx, "deaf")
	if err == nil || c != nil || !strings.Contains(err.Error(), "handler not ready") {
		t.Fatalf("Start = %v, %v; want handler not ready", c, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start gave up after %s", d)
	}
}
