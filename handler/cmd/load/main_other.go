//go:build !linux

// Command load is `make load`. It samples the handler's memory through
// /proc and re-executes itself with an inherited listener, so it runs on
// Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "load: Linux only (it reads /proc for the handler's memory)")
	os.Exit(2)
}
