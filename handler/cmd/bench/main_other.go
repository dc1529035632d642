//go:build !linux

// Command bench is `make bench`. It measures peak RSS through /proc and
// re-executes itself with an inherited listener, so it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: Linux only (it reads /proc for peak RSS and CPU times)")
	os.Exit(2)
}
