// Command handler is the MEGDocs Microsoft connector: the Azure Functions
// custom handler that serves every route of the contract. main only calls
// run; run is the composition root and the only code that reads the
// environment.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/megdocs/msconnector/handler/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		// Non-zero: the host restarts a worker that exits with an error,
		// never one that exits 0.
		fmt.Fprintln(os.Stderr, "handler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return app.Run(ctx, getenv, stdout)
}
