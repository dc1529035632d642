package devproc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/app"
	"github.com/megdocs/msconnector/handler/internal/config"
)

// HandlerChild is how a tool's child runs the handler (ServeHandler).
type HandlerChild struct {
	// LogPath receives the handler's JSON log lines (stdout carries the
	// reports); LogFlag is added to O_CREATE|O_WRONLY (O_TRUNC, O_APPEND).
	LogPath string
	LogFlag int
	// Measure wraps the production transport (app.NewHTTPClient's) with the
	// tool's counters. It runs once the settings are loaded and before the
	// handler serves, so it may also start the tool's reporting.
	Measure func(cfg config.Config, next *http.Transport) (http.RoundTripper, error)
}

// ServeHandler is a tool's child: app.Serve on the listener its parent
// handed down (InheritedListener), with the settings in its environment and
// the production HTTP client, until SIGTERM or an interrupt, exactly as the
// Functions host runs the handler. Its one addition is h.Measure.
func ServeHandler(h HandlerChild) error {
	ln, err := InheritedListener()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(h.LogPath, os.O_CREATE|os.O_WRONLY|h.LogFlag, 0o600)
	if err != nil {
		return fmt.Errorf("handler log: %w", err)
	}
	defer logFile.Close()
	cfg := config.Load(os.Getenv)
	if len(cfg.Problems) > 0 {
		return fmt.Errorf("settings: %v", cfg.Problems)
	}
	hc := app.NewHTTPClient()
	if hc.Transport, err = h.Measure(cfg, hc.Transport.(*http.Transport)); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The same logger shape as app.Run: JSON lines with a timestamp. The
	// host would read them from stdout; here stdout carries reports.
	log := zerolog.New(logFile).With().Timestamp().Logger()
	return app.Serve(ctx, ln, cfg, app.Deps{Getenv: os.Getenv, Log: log, HTTPClient: hc, Now: time.Now})
}
