// Command devidp serves the local Microsoft stand-in (package devidp) on a
// loopback port for `make run` and manual testing. It is never packaged for
// deployment.
//
// Settings (flag, else environment, else default):
//
//	-addr           DEVIDP_ADDR                   127.0.0.1:8081 (loopback only; port 0 picks one)
//	-client-id      MICROSOFT_CLIENT_ID           00000000-0000-0000-0000-00000000de51
//	-client-secret  MICROSOFT_CLIENT_SECRET       empty: only managed-identity assertions authenticate
//	-redirect-url   MICROSOFT_OAUTH_CALLBACK_URL  http://localhost:8080/api/callback
//	-expires-in     DEVIDP_EXPIRES_IN             1h (access token lifetime)
//	-identity-header DEVIDP_IDENTITY_HEADER       devidp-local (IDENTITY_HEADER for the managed identity endpoint)
//	-issuer-base    DEVIDP_ISSUER_BASE            empty: its own address (the issuer the discovery document
//	                                              announces and id_tokens carry; https://login.partner.microsoftonline.cn
//	                                              plays Azure China, https://login.microsoftonline.com login.windows.net)
//
// It prints one JSON line with event devidp_listening and the URLs to use
// as MICROSOFT_AUTHORITY_HOST, MICROSOFT_GRAPH_URL and IDENTITY_ENDPOINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/devidp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run serves the stand-in until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("devidp", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", env("DEVIDP_ADDR", "127.0.0.1:8081"), "loopback address to listen on")
	clientID := fs.String("client-id", env("MICROSOFT_CLIENT_ID", "00000000-0000-0000-0000-00000000de51"), "the application (client) ID")
	secret := fs.String("client-secret", env("MICROSOFT_CLIENT_SECRET", ""), "the accepted client secret (empty: none)")
	redirect := fs.String("redirect-url", env("MICROSOFT_OAUTH_CALLBACK_URL", "http://localhost:8080/api/callback"), "the registered redirect URI")
	expires := fs.String("expires-in", env("DEVIDP_EXPIRES_IN", "1h"), "access token lifetime")
	identityHeader := fs.String("identity-header", env("DEVIDP_IDENTITY_HEADER", "devidp-local"), "X-IDENTITY-HEADER of the managed identity endpoint")
	issuerBase := fs.String("issuer-base", env("DEVIDP_ISSUER_BASE", ""), "issuer base URL when it is not this server's address")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("devidp: %w", err)
	}
	expiresIn, err := time.ParseDuration(*expires)
	if err != nil || expiresIn <= 0 {
		return fmt.Errorf("devidp: expires-in %q is not a positive duration", *expires)
	}
	if *issuerBase != "" {
		if u, err := url.Parse(*issuerBase); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return fmt.Errorf("devidp: issuer-base %q is not a bare http(s) base URL", *issuerBase)
		}
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("devidp: addr %q: %w", *addr, err)
	}
	// A stand-in that hands out tokens to anyone must never be reachable
	// from another machine.
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("devidp: addr %q is not a loopback address", *addr)
	}

	log := zerolog.New(stdout).With().Timestamp().Logger()
	srv, err := devidp.New(devidp.Config{
		ClientID:       *clientID,
		ClientSecret:   *secret,
		RedirectURL:    *redirect,
		ExpiresIn:      expiresIn,
		IdentityHeader: *identityHeader,
		IssuerBase:     *issuerBase,
		Logger:         log,
		Now:            time.Now,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("devidp: listen: %w", err)
	}
	base := "http://" + ln.Addr().String()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	log.Info().Str("event", "devidp_listening").Str("url", base).
		Str("authority_host", base).Str("graph_url", base).
		Str("identity_endpoint", base+devidp.ManagedIdentityPath).
		Str("admin", base+"/devidp/").Str("client_id", *clientID).Bool("client_secret", *secret != "").
		Msg("Microsoft stand-in listening")

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("devidp: serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil {
		return fmt.Errorf("devidp: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("devidp: serve: %w", err)
	}
	return nil
}
