// Command devrun is `make run`: it starts Azurite, the Microsoft stand-in,
// the handler and the demo CMS page on this machine, prints where to click,
// and stops everything on Ctrl-C. With MICROSOFT_* values in
// local.settings.json the handler talks to real Microsoft instead.
// Development only: never packaged.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/megdocs/msconnector/handler/internal/devstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

func run() error {
	handlerPort := flag.Int("handler-port", 7071, "the handler's port (Azure Functions' usual local port)")
	idpPort := flag.Int("idp-port", 7081, "the Microsoft stand-in's port")
	cmsPort := flag.Int("cms-port", 8000, "the demo CMS page's port")
	settings := flag.String("settings", "local.settings.json", "local settings file (optional); real MICROSOFT_* values there switch to real Microsoft")
	verifyPath := flag.String("verify-file", filepath.Join(".run", "verify.json"), "where `make verify` finds this run's connector URL and CMS key (removed on exit)")
	logsPath := flag.String("logs", filepath.Join(".run", "connector.log"), "where the components' JSON logs go")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	local, err := devstack.ReadLocalSettings(*settings)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*logsPath), 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(*logsPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	step("starting Azurite (Table Storage, in memory), the Microsoft stand-in, the handler and the demo CMS")
	s, err := devstack.Start(ctx, devstack.Options{
		HandlerPort: *handlerPort, IdentityPort: *idpPort, CMSPort: *cmsPort,
		Settings: local, Logs: io.MultiWriter(logFile),
		// Inside the 5-minute refresh margin: every Fetch token refreshes,
		// so a revocation on the stand-in shows at the next click.
		IdentityExpiresIn: 5 * time.Minute,
		// The host's timer: a sweep at start, then REFRESH_SCHEDULE's 5
		// minutes, so GET /api/diagnostics sees a recent sweep.
		Timer: 5 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("%w (is something else using ports %d, %d or %d? choose others with -handler-port, -idp-port, -cms-port)", err, *handlerPort, *idpPort, *cmsPort)
	}
	defer s.Stop()
	removeVerify, err := writeVerifyFile(*verifyPath, s)
	if err != nil {
		return err
	}
	defer removeVerify()

	fmt.Printf(`
  Ready.

  Open the demo CMS:        %s
  Microsoft stand-in admin: %s
  Connector (handler):      %s
  Logs (JSON lines):        %s

  Try it: log in as mara -> Connect -> pick an account on the sign-in page ->
  back on the demo, which completes the connect for mara -> "Connected".
  Fetch token; Call Graph /me; revoke the account on the stand-in's admin
  page, then Fetch token again to see reconnect_required (the stand-in's
  tokens last 5 minutes, inside the connector's refresh margin, so every
  fetch refreshes).
  The leaked-link attack: as mara, "Create a connect link", switch to victor, open
  the link and sign in: nothing is connected for either (docs/cms-integration.md).

  The CMS API key for your own curl calls (this run only):
    export CMS_API_KEY=%s
    curl -s -H "Authorization: Bearer $CMS_API_KEY" %s/api/connections/mara

  Check the setup as an admin would: make verify (or the demo page's diagnostics link).

  Press Ctrl-C to stop everything.
`, s.CMSURL, adminURL(s), s.HandlerURL, *logsPath, s.CMSKey, s.HandlerURL)
	if s.RealMicrosoft {
		fmt.Printf("\n  local.settings.json sets MICROSOFT_CLIENT_ID: the handler uses real Microsoft (%s).\n", s.Settings["MICROSOFT_OAUTH_CALLBACK_URL"])
	}
	<-ctx.Done()
	step("stopping")
	return nil
}

func adminURL(s *devstack.Stack) string {
	if s.RealMicrosoft {
		return "(not used: real Microsoft)"
	}
	return s.IdentityURL + "/devidp/"
}

func step(msg string) { fmt.Println("==> " + msg) }
