package azurite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

func TestMain(m *testing.M) { os.Exit(RunTests(m)) }

// needUnix skips the tests that fake the emulator with a shell script.
func needUnix(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the fake emulators are shell scripts")
	}
}

// fakeBin writes an executable shell script standing in for azurite-table.
func fakeBin(t *testing.T, script string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "azurite-table")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartServesAndStopLeavesNothing(t *testing.T) {
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1", SkipEnv)
	}
	bin, err := FindBinary()
	if err != nil {
		t.Fatal(failure(err))
	}
	ctx := context.Background()
	e, err := Start(ctx, Options{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })

	want := "TableEndpoint=http://127.0.0.1:" + strconv.Itoa(e.Port()) + "/devstoreaccount1;"
	if cs := e.ConnectionString(); !strings.HasSuffix(cs, want) || !strings.Contains(cs, "AccountName=devstoreaccount1;AccountKey="+Key+";") {
		t.Errorf("ConnectionString() = %q, want the devstoreaccount1 key and suffix %q", cs, want)
	}

	// The connection string works with the SDK end to end.
	svc, err := aztables.NewServiceClientFromConnectionString(e.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateTable(ctx, "probe", nil); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	entity := []byte(`{"PartitionKey":"p","RowKey":"r","Value":"hello"}`)
	if _, err := svc.NewClient("probe").AddEntity(ctx, entity, nil); err != nil {
		t.Fatalf("AddEntity: %v", err)
	}
	got, err := svc.NewClient("probe").GetEntity(ctx, "p", "r", nil)
	if err != nil {
		t.Fatalf("GetEntity: %v", err)
	}
	if !bytes.Contains(got.Value, []byte(`"Value":"hello"`)) {
		t.Errorf("GetEntity = %s, want Value hello", got.Value)
	}
	dir := e.dir

	pid := e.Pid()
	if err := e.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if runtime.GOOS != "windows" && groupAlive(pid) {
		t.Errorf("process group %d still has processes after Stop", pid)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.Port()), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after Stop", e.Port())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace %s left behind after Stop (stat: %v)", dir, err)
	}
}

func TestTwoEmulatorsAreIndependent(t *testing.T) {
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1", SkipEnv)
	}
	ctx := context.Background()
	var emus [2]*Emulator
	errs := make(chan error, 2)
	for i := range emus {
		go func() {
			var err error
			emus[i], err = Start(ctx, Options{})
			errs <- err
		}()
	}
	for range emus {
		if err := <-errs; err != nil {
			t.Fatal(failure(err))
		}
	}
	for _, e := range emus {
		t.Cleanup(func() { _ = e.Stop() })
	}
	if emus[0].Port() == emus[1].Port() {
		t.Fatalf("both emulators on port %d", emus[0].Port())
	}
	svc0, _ := aztables.NewServiceClientFromConnectionString(emus[0].ConnectionString(), nil)
	svc1, _ := aztables.NewServiceClientFromConnectionString(emus[1].ConnectionString(), nil)
	if _, err := svc0.CreateTable(ctx, "onlyhere", nil); err != nil {
		t.Fatal(err)
	}
	// The same name is free on the other emulator: nothing is shared.
	if _, err := svc1.CreateTable(ctx, "onlyhere", nil); err != nil {
		var re *azcore.ResponseError
		errors.As(err, &re)
		t.Fatalf("CreateTable on the second emulator: %v (code %v)", err, re)
	}
}

func TestForTestSharesOneEmulatorUnderRunTests(t *testing.T) {
	a := ForTest(t)
	b := ForTest(t)
	if a != b {
		t.Fatalf("ForTest gave %q then %q: want one shared emulator per test binary", a, b)
	}
	svc, err := aztables.NewServiceClientFromConnectionString(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	pager := svc.NewListTablesPager(nil)
	if _, err := pager.NextPage(context.Background()); err != nil {
		t.Fatalf("listing tables on the shared emulator: %v", err)
	}
}

// TestForTestProbe is run by TestForTestMissingBinary* in a child process.
func TestForTestProbe(t *testing.T) {
	if os.Getenv("AZURITE_FORTEST_PROBE") != "1" {
		t.Skip("only run as a child process")
	}
	ForTest(t)
	fmt.Println("PROBE-REACHED-AFTER-FORTEST")
}

func runProbe(t *testing.T, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestForTestProbe$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), append([]string{"AZURITE_FORTEST_PROBE=1"}, env...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestForTestMissingBinaryFailsWithHint(t *testing.T) {
	out, err := runProbe(t, BinEnv+"="+filepath.Join(t.TempDir(), "nothing-here"), SkipEnv+"=")
	if err == nil {
		t.Fatalf("probe passed with a missing binary; output:\n%s", out)
	}
	for _, want := range []string{"--- FAIL: TestForTestProbe", "make deps", SkipEnv + "=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PROBE-REACHED-AFTER-FORTEST") {
		t.Errorf("the probe went on after ForTest failed:\n%s", out)
	}
}

func TestForTestSkipsOnlyWhenAskedTo(t *testing.T) {
	out, err := runProbe(t, BinEnv+"="+filepath.Join(t.TempDir(), "nothing-here"), SkipEnv+"=1")
	if err != nil {
		t.Fatalf("probe failed with %s=1: %v\n%s", SkipEnv, err, out)
	}
	if !strings.Contains(out, "--- SKIP: TestForTestProbe") {
		t.Errorf("probe did not skip with %s=1:\n%s", SkipEnv, out)
	}
}

func TestFindBinary(t *testing.T) {
	root := t.TempDir()
	installed := filepath.Join(root, binRelPath)
	if err := os.MkdirAll(filepath.Dir(installed), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(installed, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	deep := filepath.Join(root, "handler", "internal", "tablestore")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	override := filepath.Join(t.TempDir(), "my-azurite")
	if err := os.WriteFile(override, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == BinEnv {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		env     string
		wd      string
		want    string
		wantErr error
	}{
		{name: "found in the working directory", wd: root, want: installed},
		{name: "found in a parent", wd: deep, want: installed},
		{name: "env wins", env: override, wd: deep, want: override},
		{name: "env names a missing file", env: override + ".missing", wd: deep, wantErr: ErrNotInstalled},
		{name: "nowhere", wd: t.TempDir(), wantErr: ErrNotInstalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findBinary(env(tt.env), tt.wd)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("findBinary = %q, %v; want error %v", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "make deps") {
					t.Errorf("error %q does not say to run make deps", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("findBinary = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{Bin: filepath.Join(t.TempDir(), "azurite-table")})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Start = %v, want ErrNotInstalled", err)
	}
}

func TestStartRetriesOnlyATakenPort(t *testing.T) {
	needUnix(t)
	tests := []struct {
		name     string
		output   string
		attempts int
	}{
		{"port taken", "Exiting due to an unhandled error: listen EADDRINUSE: address already in use", startAttempts},
		{"any other failure", "Exiting due to an unhandled error: boom", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count := filepath.Join(t.TempDir(), "count")
			bin := fakeBin(t, "echo attempt >> "+count+"\necho '"+tt.output+"' >&2\nexit 1\n")
			_, err := Start(context.Background(), Options{Bin: bin, StartTimeout: 10 * time.Second})
			if !errors.Is(err, errExitedEarly) {
				t.Fatalf("Start = %v, want errExitedEarly", err)
			}
			if !strings.Contains(err.Error(), tt.output) {
				t.Errorf("error lacks the emulator's output %q: %v", tt.output, err)
			}
			b, _ := os.ReadFile(count)
			if got := strings.Count(string(b), "attempt"); got != tt.attempts {
				t.Errorf("started %d times, want %d", got, tt.attempts)
			}
		})
	}
}

func TestStartTimeoutKillsTheWholeGroup(t *testing.T) {
	needUnix(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell never prints the marker and keeps a child (sleep): a
	// timed-out start must take both down.
	bin := fakeBin(t, "echo $$ > "+pidFile+"\nsleep 60\n")
	start := time.Now()
	_, err := Start(context.Background(), Options{Bin: bin, StartTimeout: 500 * time.Millisecond})
	if err == nil || errors.Is(err, errExitedEarly) {
		t.Fatalf("Start = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %v with a 500ms timeout", d)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 || groupAlive(pid) {
		t.Errorf("process group %d (the fake emulator and its sleep) survived the failed start", pid)
	}
}

func TestStartHonoursContext(t *testing.T) {
	needUnix(t)
	bin := fakeBin(t, "sleep 60\n")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Start(ctx, Options{Bin: bin})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want context.DeadlineExceeded", err)
	}
}

func TestOutputWriterFindsSplitMarkerAndKeepsTail(t *testing.T) {
	var forwarded bytes.Buffer
	w := newOutputWriter(&forwarded, startedMarker)
	line := "Azurite Table service successfully started on 127.0.0.1:1234\n"
	w.Write([]byte("Azurite Table service is starting\nAzurite Table serv"))
	select {
	case <-w.started:
		t.Fatal("started before the marker was complete")
	default:
	}
	w.Write([]byte(line[len("Azurite Table serv"):]))
	select {
	case <-w.started:
	default:
		t.Fatal("marker split across writes not found")
	}
	w.Write(bytes.Repeat([]byte("x"), 3*outputTail))
	if got := len(w.tail()); got != outputTail {
		t.Errorf("tail is %d bytes, want %d", got, outputTail)
	}
	if !strings.HasPrefix(forwarded.String(), "Azurite Table service is starting\n"+line) {
		t.Errorf("output not forwarded: %.80q", forwarded.String())
	}
}

// The Queue service starts from the same npm package, answers on its own
// port, and its connection string names a QueueEndpoint (what azqueue and
// AzureWebJobsStorage read).
func TestStartQueueService(t *testing.T) {
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1")
	}
	e, err := Start(context.Background(), Options{Service: Queue})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	cs := e.ConnectionString()
	if !strings.Contains(cs, "QueueEndpoint=http://127.0.0.1:"+strconv.Itoa(e.Port())+"/"+Account+";") || strings.Contains(cs, "TableEndpoint") {
		t.Errorf("connection string %q", cs)
	}
	resp, err := http.Get(e.Endpoint() + "?comp=list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Unsigned: refused, but by the Queue service.
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned list queues: %d", resp.StatusCode)
	}
}
