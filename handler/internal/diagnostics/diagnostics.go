// Package diagnostics is GET /api/diagnostics: from inside the running app
// it checks what the setup guide's troubleshooting list is about (settings,
// secrets, Table Storage, the app registration's credential, the timer, the
// connections' statuses and scopes) and says what to fix. It computes at
// most once per TTL (a minute) and concurrent callers share one
// computation, so the route cannot be used to hammer Key Vault, Storage or
// Microsoft.
//
// A Report never holds a secret value or a token: every detail is built
// from names, versions, dates, counts and Microsoft's error codes, never
// from a value read or a response body. It owns no storage and no HTTP
// routing; its inputs are small interfaces the app wires.
package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/lifetime"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// Stable check names (contract: GET /api/diagnostics). Secret checks are
// SecretPrefix + the Key Vault secret name.
const (
	CheckConfiguration = "configuration"
	SecretPrefix       = "secret:"
	CheckTableStorage  = "table_storage"
	CheckCredential    = "microsoft_credential"
	CheckTimer         = "timer"
	CheckConnections   = "connections"
)

// Defaults.
const (
	// DefaultTTL: the contract's "computed at most once a minute".
	DefaultTTL = time.Minute
	// SecretWarning: a secret expiring within this is not ok (contract).
	SecretWarning = 14 * 24 * time.Hour
	// SweepMaxAge: the timer check fails when no sweep finished within
	// this (contract: "the last hour").
	SweepMaxAge = time.Hour
	// checkTimeout bounds one check; the host answers an HTTP call within
	// 230 s, and an admin waiting on `make verify` should not wait long.
	checkTimeout = 20 * time.Second
)

// Check is one line of the report. Fix is set exactly when OK is false.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Report is the route's JSON. OK is true exactly when every check is.
type Report struct {
	OK        bool      `json:"ok"`
	CheckedAt time.Time `json:"checked_at"`
	Checks    []Check   `json:"checks"`
}

// Tables is the part of the Table Storage adapter the checks use.
type Tables interface {
	// Probe proves both tables work (a probe row written, read, deleted).
	Probe(ctx context.Context) error
	// LastSweep returns the last sweep's record; an error wrapping
	// connection.ErrNotFound when none was recorded.
	LastSweep(ctx context.Context) (connection.SweepRecord, error)
}

// Credential is the identity client's client-credentials check.
type Credential interface {
	CheckCredential(ctx context.Context, homeTenant string) error
}

// Service computes reports. Its fields are set once before the first
// Report; nil dependencies are parts the app could not build (their checks
// say so and fail). Safe for concurrent use.
type Service struct {
	Config config.Config
	// Secrets is where the app reads secrets; SecretsFromEnv says it is
	// the environment fallback (no KEY_VAULT_URL), which has no versions
	// or expiry.
	Secrets        secrets.Source
	SecretsFromEnv bool
	Tables         Tables
	Credential     Credential
	// TTL between computations; zero means DefaultTTL.
	TTL time.Duration
	// Now is the clock, required (time.Now in production).
	Now func() time.Time
	Log zerolog.Logger

	mu       sync.Mutex
	last     *Report
	lastAt   time.Time // when last was computed, to the nanosecond
	inflight *flight
	// life is the computation's: it outlives the caller that started it,
	// and Close ends it.
	life lifetime.Group
}

type flight struct {
	done   chan struct{}
	report Report
}

// Report returns the last report when it is younger than the TTL, else
// computes a new one; callers arriving during a computation wait for it
// (or for their ctx) and get its result. The computation itself is not
// tied to the first caller's ctx: a client hanging up must not leave the
// others with a cancelled result. After Close no computation starts: the
// answer is an empty report, as for a caller that left.
func (s *Service) Report(ctx context.Context) Report {
	s.mu.Lock()
	if s.last != nil && s.now().Sub(s.lastAt) < s.ttl() {
		r := copyReport(*s.last)
		s.mu.Unlock()
		return r
	}
	f := s.inflight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		if !s.life.Go(ctx, func(ctx context.Context) { s.compute(ctx, f) }) {
			s.mu.Unlock()
			return Report{CheckedAt: s.now(), Checks: []Check{}}
		}
		s.inflight = f
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return copyReport(f.report)
	case <-ctx.Done():
		// The caller is gone; the computation finishes for the next one.
		return Report{CheckedAt: s.now(), Checks: []Check{}}
	}
}

// Close cancels a computation in flight (its checks end with their
// context's error) and waits for it, at most until ctx is done; later
// calls to Report compute nothing. Call it once no request can reach the
// Service (app.Serve: after the HTTP server's Shutdown).
func (s *Service) Close(ctx context.Context) error {
	if err := s.life.Close(ctx); err != nil {
		return fmt.Errorf("diagnostics: close: %w", err)
	}
	return nil
}

func (s *Service) compute(ctx context.Context, f *flight) {
	at := s.now()
	r := s.run(ctx, at)
	// checked_at in whole seconds, like every time of the contract; the
	// cache runs on the precise time so it never expires early.
	r.CheckedAt = at.Truncate(time.Second)
	s.mu.Lock()
	s.last, s.lastAt = &r, at
	s.inflight = nil
	f.report = r
	s.mu.Unlock()
	close(f.done)

	failed := zerolog.Arr()
	for _, c := range r.Checks {
		if !c.OK {
			failed.Str(c.Name)
		}
	}
	ev := s.Log.Info()
	if !r.OK {
		ev = s.Log.Warn()
	}
	ev.Str("event", "diagnostics_checked").Bool("ok", r.OK).Array("failed", failed).Msg("diagnostics computed")
}

// run performs every check, concurrently (each bounded by checkTimeout),
// and returns them in the contract's order.
func (s *Service) run(ctx context.Context, checkedAt time.Time) Report {
	names := s.neededSecrets()
	jobs := []func(context.Context) Check{s.checkConfiguration}
	for _, n := range names {
		jobs = append(jobs, func(ctx context.Context) Check { return s.checkSecret(ctx, n, checkedAt) })
	}
	jobs = append(jobs, s.checkTables, s.checkCredential)
	sweepAt := len(jobs)
	jobs = append(jobs, nil, nil) // timer and connections share one read

	out := make([]Check, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		if job == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			out[i] = job(cctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		out[sweepAt], out[sweepAt+1] = s.checkSweep(cctx, checkedAt)
	}()
	wg.Wait()

	r := Report{OK: true, CheckedAt: checkedAt, Checks: out}
	for i := range r.Checks {
		if !r.Checks[i].OK {
			r.OK = false
			if r.Checks[i].Fix == "" {
				// The contract: a failing check carries fix.
				r.Checks[i].Fix = "See the connector's log (event diagnostics_checked and the lines before it) and docs/operations.md."
			}
		} else {
			r.Checks[i].Fix = ""
		}
	}
	return r
}

// neededSecrets are the secrets this configuration reads: the CMS key and
// the token-encryption key always, the client secret only with secret
// client authentication, the webhook secret only with CMS_WEBHOOK_URL.
// cms-api-key-previous is optional (only while rotating) and not checked.
func (s *Service) neededSecrets() []string {
	out := []string{secrets.ClientSecret, secrets.EncryptionKey, secrets.CMSAPIKey, secrets.WebhookSecret}
	keep := out[:0]
	for _, n := range out {
		switch {
		case n == secrets.ClientSecret && s.Config.ClientAuth == config.ClientAuthManagedIdentity:
		case n == secrets.WebhookSecret && s.Config.WebhookURL == "":
		default:
			keep = append(keep, n)
		}
	}
	return keep
}

func (s *Service) ttl() time.Duration {
	if s.TTL > 0 {
		return s.TTL
	}
	return DefaultTTL
}

func (s *Service) now() time.Time { return s.Now().UTC() }

func copyReport(r Report) Report {
	r.Checks = append([]Check(nil), r.Checks...)
	return r
}

// errNotFound reports a missing sweep record.
func errNotFound(err error) bool { return errors.Is(err, connection.ErrNotFound) }
