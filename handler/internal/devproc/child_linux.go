package devproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// listenerFD is where a child finds the listener its parent hands down: the
// first of exec.Cmd.ExtraFiles.
const listenerFD = 3

const (
	readyTimeout = 20 * time.Second // Start: until GET / answers 200
	exitTimeout  = 30 * time.Second // Stop: from the final report to the exit
	killTimeout  = 5 * time.Second  // Kill: from SIGKILL to the wait
)

// Config says how to start a child.
type Config struct {
	// Name is the tool's name, said before what the child prints on stdout
	// that is not a report ("bench: handler said ...").
	Name string
	// Args follow the re-executed binary on its command line
	// ("-role=handler").
	Args []string
	// Env is the child's whole environment.
	Env []string
	// Listener becomes the child's file descriptor 3 (InheritedListener).
	// The parent keeps it open, so every child answers on the same URL.
	Listener *os.File
	// BaseURL is the listener's URL: Start returns once GET BaseURL/
	// answers 200, as the Functions host waits for a custom handler.
	BaseURL string
}

// Child is a running child, seen from the parent.
type Child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the child has been waited for
	err    error         // its exit status, valid once exited is closed
}

// Start re-executes this binary with cfg and waits until it is ready. Each
// JSON line the child writes to stdout (Report) is decoded into an R and
// handed to report, in order, from one goroutine; report may block, which
// holds the child's next report back. Other lines go to stderr. The child
// gets its stderr, and SIGKILL when the parent dies: no orphan holds memory
// or a port on a shared machine. On error the child is killed.
func Start[R any](ctx context.Context, cfg Config, report func(R)) (*Child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own executable: %w", err)
	}
	cmd := exec.Command(self, cfg.Args...)
	cmd.Env = cfg.Env
	cmd.ExtraFiles = []*os.File{cfg.Listener}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("handler stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start handler: %w", err)
	}
	c := &Child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r R
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				fmt.Fprintf(os.Stderr, "%s: handler said %q\n", cfg.Name, sc.Text())
				continue
			}
			report(r)
		}
		c.err = cmd.Wait()
		close(c.exited)
	}()
	if err := waitReady(ctx, cfg.BaseURL); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

func waitReady(ctx context.Context, baseURL string) error {
	c := &http.Client{Timeout: time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET / answered %d", resp.StatusCode)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("handler not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Signal sends sig to the child (SIGUSR1: a tool's "report now").
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Exited is closed once the child has exited and been waited for; every
// report it wrote has been handed over by then.
func (c *Child) Exited() <-chan struct{} { return c.exited }

// Stop asks the child to shut down as the host does (SIGTERM), calls final
// to collect its last report (on error the child is killed and the error
// returned as it is), then waits for it to exit, killing it after 30
// seconds. A non-zero exit status is an error.
func (c *Child) Stop(final func() error) error {
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop handler: %w", err)
	}
	if err := final(); err != nil {
		c.Kill()
		return err
	}
	select {
	case <-c.exited:
		if c.err != nil {
			return fmt.Errorf("handler exited: %w", c.err)
		}
	case <-time.After(exitTimeout):
		c.Kill()
		return errors.New("handler did not exit")
	}
	return nil
}

// Kill ends the child at once, by its own process ID, and waits (up to 5
// seconds) until it has been reaped; a no-op once it has exited. For errors
// and clean-up.
func (c *Child) Kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(killTimeout):
	}
}

// InheritedListener is, in a child, the listener its parent handed down
// (Config.Listener).
func InheritedListener() (net.Listener, error) {
	ln, err := net.FileListener(os.NewFile(listenerFD, "listener"))
	if err != nil {
		return nil, fmt.Errorf("listener from fd %d: %w", listenerFD, err)
	}
	return ln, nil
}

var reportMu sync.Mutex

// Report writes v, in a child, as one JSON line on stdout: a report for the
// parent's report function (Start). Safe for concurrent use; a line is
// never interleaved with another.
func Report(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}
