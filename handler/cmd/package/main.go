// Command package builds the Azure Functions deployment package (`make
// package`): a zip with host.json and the custom handler binary at its root
// and every function folder of functions/ flattened beside them:
//
//	host.json
//	handler                 linux/amd64, CGO_ENABLED=0, mode 0755
//	<name>/function.json    one per functions/<name>/function.json
//
// Nothing else goes in: never local.settings.json, never other files found in
// functions/. It owns packaging only; deploying is infra/deploy.sh's job.
package main

import (
	"archive/zip"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// HandlerName is the binary's name in the package. host.json's
// customHandler.description.defaultExecutablePath must name it.
const HandlerName = "handler"

// modTime is written for every entry so the same inputs give the same zip.
var modTime = time.Date(2020, time.January, 1, 0, 0, 0, 0, time.UTC)

// functionName is what the Functions host accepts as a function (folder) name.
var functionName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,126}$`)

type options struct {
	Root   string // repository root: host.json, functions/, handler/
	Out    string // zip to write
	Binary string // a prebuilt handler to package instead of building ./handler
	Go     string // the go command
}

func main() {
	var o options
	flag.StringVar(&o.Root, "root", ".", "repository root (holds host.json, functions/ and handler/)")
	flag.StringVar(&o.Out, "out", filepath.Join("dist", "app.zip"), "zip file to write")
	flag.StringVar(&o.Binary, "binary", "", "package this prebuilt linux/amd64 handler instead of building ./handler")
	flag.StringVar(&o.Go, "go", "go", "go command used to build the handler")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
		os.Exit(1)
	}
}

// entry is one file of the package.
type entry struct {
	name string
	mode os.FileMode
	data []byte
}

func run(ctx context.Context, o options, stdout io.Writer) error {
	host, err := readHostJSON(o.Root)
	if err != nil {
		return err
	}
	functions, err := readFunctions(o.Root)
	if err != nil {
		return err
	}

	binary := o.Binary
	if binary == "" {
		dir, err := os.MkdirTemp("", "msconnector-package-")
		if err != nil {
			return fmt.Errorf("temp dir: %w", err)
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, HandlerName)
		if err := build(ctx, o, binary); err != nil {
			return err
		}
	}
	handler, err := readHandler(binary)
	if err != nil {
		return err
	}

	entries := append([]entry{
		{name: "host.json", mode: 0o644, data: host},
		{name: HandlerName, mode: 0o755, data: handler},
	}, functions...)
	if err := writeZip(o.Out, entries); err != nil {
		return err
	}
	names := make([]string, 0, len(functions))
	for _, f := range functions {
		names = append(names, filepath.Dir(f.name))
	}
	fmt.Fprintf(stdout, "%s: host.json, %s (%.1f MB, linux/amd64), %d functions: %s\n",
		o.Out, HandlerName, float64(len(handler))/(1<<20), len(names), strings.Join(names, ", "))
	return nil
}

// readHostJSON checks that host.json starts the binary this package ships.
func readHostJSON(root string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	var host struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	if err := json.Unmarshal(data, &host); err != nil {
		return nil, fmt.Errorf("host.json: %w", err)
	}
	if got := host.CustomHandler.Description.DefaultExecutablePath; got != HandlerName {
		return nil, fmt.Errorf("host.json: customHandler.description.defaultExecutablePath is %q, want %q (the binary in the package)", got, HandlerName)
	}
	return data, nil
}

// readFunctions returns functions/<name>/function.json as <name>/function.json,
// sorted by name. Folders without a function.json are an error: the host
// would ignore them silently.
func readFunctions(root string) ([]entry, error) {
	dir := filepath.Join(root, "functions")
	items, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("functions: %w", err)
	}
	var out []entry
	for _, it := range items {
		if !it.IsDir() {
			continue
		}
		name := it.Name()
		if !functionName.MatchString(name) || name == HandlerName {
			return nil, fmt.Errorf("functions/%s: not a usable function name", name)
		}
		data, err := os.ReadFile(filepath.Join(dir, name, "function.json"))
		if err != nil {
			return nil, fmt.Errorf("functions/%s: %w", name, err)
		}
		var fn struct {
			Bindings []json.RawMessage `json:"bindings"`
		}
		if err := json.Unmarshal(data, &fn); err != nil {
			return nil, fmt.Errorf("functions/%s/function.json: %w", name, err)
		}
		if len(fn.Bindings) == 0 {
			return nil, fmt.Errorf("functions/%s/function.json: no bindings", name)
		}
		out = append(out, entry{name: name + "/function.json", mode: 0o644, data: data})
	}
	if len(out) == 0 {
		return nil, errors.New("functions: no function folders")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// build compiles ./handler the way Flex Consumption runs it: Linux, amd64,
// no cgo (a static binary needs nothing from the image).
func build(ctx context.Context, o options, out string) error {
	cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-o", out, "./handler")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./handler: %w\n%s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// readHandler refuses a binary the Flex Consumption workers cannot exec.
func readHandler(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("handler: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("handler %s: not a Linux executable: %w", path, err)
	}
	defer f.Close()
	// ET_DYN is a position-independent executable (-buildmode=pie).
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || (f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN) {
		return nil, fmt.Errorf("handler %s: %v %v %v, want a linux/amd64 executable", path, f.Class, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("handler %s: dynamically linked; build with CGO_ENABLED=0", path)
		}
	}
	return data, nil
}

// writeZip writes to a temporary file first so a failed run never leaves a
// half-written package where deploy.sh would pick it up.
func writeZip(path string, entries []entry) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	zw := zip.NewWriter(tmp)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: modTime}
		h.SetMode(e.mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", path, e.name, err)
		}
		if _, err := w.Write(e.data); err != nil {
			return fmt.Errorf("%s: %s: %w", path, e.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
