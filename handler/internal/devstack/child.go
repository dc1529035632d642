package devstack

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// BuildHandler builds the `handler` command (what Azure runs) into dir and
// returns the binary's path, for Options.HandlerBinary.
func BuildHandler(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, goCommand(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("devstack: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	out := filepath.Join(dir, "handler")
	cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", out, "./handler")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("devstack: go build ./handler: %w\n%s", err, b)
	}
	return out, nil
}

// goCommand: go test puts its toolchain's bin first on PATH.
func goCommand() string { return "go" }

// startChild runs o.HandlerBinary with env as its whole environment. Stop
// (runCtx's end) sends SIGTERM, as the host does, and kills it 10 s later.
func (s *Stack) startChild(runCtx context.Context, o Options, env map[string]string) error {
	cmd := exec.CommandContext(runCtx, o.HandlerBinary)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = orDiscard(o.HandlerStdout), orDiscard(o.HandlerStderr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devstack: start %s: %w", o.HandlerBinary, err)
	}
	go func() { s.done <- cmd.Wait() }()
	return nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
