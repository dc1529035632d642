package main

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// repoRoot is the repository root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fakeRepo is a repository with the real host.json and functions/, a tiny
// handler module in place of the real one, and the files that must never be
// packaged.
func fakeRepo(t *testing.T) string {
	t.Helper()
	real := repoRoot(t)
	root := t.TempDir()
	host, err := os.ReadFile(filepath.Join(real, "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "host.json"), string(host))
	copyTree(t, filepath.Join(real, "functions"), filepath.Join(root, "functions"))
	writeFile(t, filepath.Join(root, "go.mod"), "module example.com/fakehandler\n\ngo 1.22\n")
	writeFile(t, filepath.Join(root, "handler", "main.go"), "package main\n\nfunc main() {}\n")
	writeFile(t, filepath.Join(root, "local.settings.json"), `{"IsEncrypted": false, "Values": {"CMS_API_KEY": "must-not-ship"}}`)
	writeFile(t, filepath.Join(root, "functions", "README.md"), "not a function\n")
	writeFile(t, filepath.Join(root, "functions", "connect", "notes.txt"), "not part of the function\n")
	return root
}

// functionNames lists the folders under functions/ that hold a function.json.
func functionNames(t *testing.T, root string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, "functions", "*", "function.json"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(names)
	return names
}

type zipEntry struct {
	mode os.FileMode
	data []byte
}

func readZip(t *testing.T, path string) map[string]zipEntry {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer zr.Close()
	out := map[string]zipEntry{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if _, dup := out[f.Name]; dup {
			t.Errorf("entry %s appears twice", f.Name)
		}
		out[f.Name] = zipEntry{mode: f.Mode(), data: data}
	}
	return out
}

// checkLayout asserts the package holds exactly host.json, the handler and
// one <name>/function.json per function, byte for byte, with the right modes.
func checkLayout(t *testing.T, zipPath, root string) {
	t.Helper()
	entries := readZip(t, zipPath)

	want := []string{"handler", "host.json"}
	for _, n := range functionNames(t, root) {
		want = append(want, n+"/function.json")
	}
	sort.Strings(want)
	var got []string
	for name := range entries {
		got = append(got, name)
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("zip entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	h := entries["handler"]
	if h.mode.Perm() != 0o755 || !h.mode.IsRegular() {
		t.Errorf("handler mode = %v, want -rwxr-xr-x", h.mode)
	}
	f, err := elf.NewFile(bytes.NewReader(h.data))
	if err != nil {
		t.Fatalf("handler is not ELF: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("handler is %v %v, want x86-64 ELF64", f.Machine, f.Class)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("handler has an ELF interpreter: it is dynamically linked (CGO_ENABLED=0 missing)")
		}
	}

	for name, e := range entries {
		if name == "handler" {
			continue
		}
		if e.mode.Perm() != 0o644 {
			t.Errorf("%s mode = %v, want -rw-r--r--", name, e.mode)
		}
		src := filepath.Join(root, name)
		if name != "host.json" {
			src = filepath.Join(root, "functions", name)
		}
		orig, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.data, orig) {
			t.Errorf("%s differs from %s", name, src)
		}
	}
}

// TestBuildsAndPackages runs the real build path (go build with GOOS=linux
// GOARCH=amd64 CGO_ENABLED=0) on a stand-in handler and checks the zip.
func TestBuildsAndPackages(t *testing.T) {
	root := fakeRepo(t)
	out := filepath.Join(root, "dist", "app.zip")
	var stdout bytes.Buffer
	if err := run(context.Background(), options{Root: root, Out: out, Go: goCommand()}, &stdout); err != nil {
		t.Fatalf("run: %v", err)
	}
	checkLayout(t, out, root)
	if want := fmt.Sprintf("%d functions", len(functionNames(t, root))); !strings.Contains(stdout.String(), want) {
		t.Errorf("summary = %q, want it to count %s", stdout.String(), want)
	}
	leftovers, _ := filepath.Glob(filepath.Join(root, "dist", "*.tmp"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left in dist: %v", leftovers)
	}
}

// TestPackagesRepository packages this repository's own host.json and
// functions/ (with a prebuilt stand-in binary, so it does not depend on the
// handler compiling).
func TestPackagesRepository(t *testing.T) {
	root := repoRoot(t)
	// The contract's six, diagnostics (v2) and the queue-triggered webhook delivery (issue 15).
	if got := functionNames(t, root); strings.Join(got, ",") != "callback,connect,connect-sessions,connection,connections,diagnostics,refresh,webhook" {
		t.Fatalf("functions = %v, want the seven of the contract and webhook", got)
	}
	out := filepath.Join(t.TempDir(), "app.zip")
	bin := buildStandIn(t)
	if err := run(context.Background(), options{Root: root, Out: out, Binary: bin}, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	checkLayout(t, out, root)
	if _, err := os.Stat(filepath.Join(root, "local.settings.json.example")); err != nil {
		t.Fatalf("local.settings.json.example: %v", err)
	}
}

func TestRejects(t *testing.T) {
	bin := buildStandIn(t)
	tests := []struct {
		name    string
		mutate  func(t *testing.T, root string)
		binary  string
		wantErr string
	}{
		{
			name:    "no host.json",
			mutate:  func(t *testing.T, root string) { os.Remove(filepath.Join(root, "host.json")) },
			wantErr: "host.json",
		},
		{
			name: "host.json names another executable",
			mutate: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "host.json"), `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"app"}}}`)
			},
			wantErr: "defaultExecutablePath",
		},
		{
			name: "function folder without function.json",
			mutate: func(t *testing.T, root string) {
				os.Remove(filepath.Join(root, "functions", "callback", "function.json"))
			},
			wantErr: "functions/callback",
		},
		{
			name: "function.json without bindings",
			mutate: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "functions", "connect", "function.json"), `{"bindings": []}`)
			},
			wantErr: "no bindings",
		},
		{
			name: "function named like the binary",
			mutate: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "functions", "handler", "function.json"), `{"bindings": [{"type":"httpTrigger"}]}`)
			},
			wantErr: "functions/handler",
		},
		{
			name:    "binary for another platform",
			mutate:  func(t *testing.T, root string) {},
			binary:  "script",
			wantErr: "not a Linux executable",
		},
		{
			name: "handler does not compile",
			mutate: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "handler", "main.go"), "package main\n\nfunc main() { undefined() }\n")
			},
			wantErr: "go build ./handler",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := fakeRepo(t)
			tt.mutate(t, root)
			o := options{Root: root, Out: filepath.Join(root, "dist", "app.zip"), Go: goCommand()}
			switch tt.binary {
			case "script":
				o.Binary = filepath.Join(root, "handler.sh")
				writeFile(t, o.Binary, "#!/bin/sh\nexit 0\n")
			case "":
				if tt.wantErr != "go build ./handler" {
					o.Binary = bin
				}
			}
			err := run(context.Background(), o, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run error = %v, want one mentioning %q", err, tt.wantErr)
			}
			if _, statErr := os.Stat(o.Out); statErr == nil {
				t.Errorf("%s was written although packaging failed", o.Out)
			}
		})
	}
}

// buildStandIn builds a tiny static linux/amd64 program to package.
func buildStandIn(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "go.mod"), "module example.com/standin\n\ngo 1.22\n")
	writeFile(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() {}\n")
	bin := filepath.Join(dir, "handler")
	cmd := exec.Command(goCommand(), "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stand-in: %v\n%s", err, out)
	}
	return bin
}

// goCommand is the go command on PATH, as `make package` uses it.
func goCommand() string { return "go" }
