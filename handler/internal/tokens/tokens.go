// Package tokens hands out usable access tokens and refreshes connections.
// It is the only code that redeems refresh tokens, for both the token API and
// the timer's sweep, so the rules live in one place:
//   - at most one refresh per user per instance at a time (single-flight);
//   - every write is conditional on the ETag; a lost race re-reads and
//     either adopts the winner's tokens or re-applies ours, so a rotated
//     refresh token is never dropped;
//   - Microsoft's failures are classified (connection.Class) and each class
//     has exactly one outcome;
//   - AADSTS50196 pauses that one connection, in its row (ThrottledUntil),
//     so every instance and the sweep hold back; a refresh is never sent
//     while its connection is paused.
//
// It knows nothing of HTTP or Microsoft's wire format.
package tokens

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// ConfigurationRetryAfter is suggested with not_configured when Microsoft
// rejected our app credentials: an administrator has to act first.
const ConfigurationRetryAfter = time.Minute

// DefaultRetryAfter is suggested when Microsoft gave no Retry-After.
const DefaultRetryAfter = 30 * time.Second

// Token is what the CMS gets: never the refresh token.
type Token struct {
	AccessToken string
	ExpiresAt   time.Time
	Scopes      []string
}

// Service is safe for concurrent use.
type Service struct {
	Store     connection.Store
	Refresher connection.Refresher
	Events    connection.Publisher
	Policy    connection.Policy
	Log       zerolog.Logger
	// Now is the clock. Required: the Service panics without it.
	Now func() time.Time
	// RefreshTimeout bounds one shared refresh, independent of the caller
	// that started it (another caller may still be waiting for it).
	RefreshTimeout time.Duration

	flight singleflight.Group
	// touching keeps at most one LastUsedAt write in flight per user.
	touching sync.Map

	// The background work (usage writes, shared refreshes) and its
	// lifetime: Close ends it. bg is added to only under mu while not
	// closed, so Close's wait cannot miss a late start.
	mu     sync.Mutex
	closed bool
	bg     sync.WaitGroup
	life   lifetime
}

// Token returns a usable access token for userID, refreshing first when it
// expires within the policy's margin.
func (s *Service) Token(ctx context.Context, userID string) (Token, error) {
	c, err := s.usable(ctx, userID)
	if err != nil {
		return Token{}, err
	}
	now := s.now()
	if !s.Policy.NeedsRefresh(c, now) {
		s.touch(c, now)
		return tokenOf(c), nil
	}

	needs := func(cur connection.Connection, now time.Time) bool { return s.Policy.NeedsRefresh(cur, now) }
	res, err := s.refreshShared(ctx, userID, needs, true)
	if err == nil && res.Outcome == Skipped && needs(res.Conn, s.now()) {
		// We joined a sweep's flight that judged by the sweep's policy;
		// ours is stricter, so fly once more.
		res, err = s.refreshShared(ctx, userID, needs, true)
	}
	if err == nil {
		return tokenOf(res.Conn), nil
	}
	switch {
	case errors.Is(err, connection.ErrNotFound), errors.Is(err, connection.ErrReconnectRequired):
		return Token{}, err
	}
	// Configuration or transient: a token that is still valid is better
	// than an error; the CMS only needs it for the next call.
	if c.AccessTokenExpiresAt.After(now) {
		return tokenOf(c), nil
	}
	if connection.ClassOf(err) == connection.ClassConfiguration {
		return Token{}, err
	}
	ra, ok := connection.RetryAfterOf(err)
	if !ok {
		ra = DefaultRetryAfter
	}
	return Token{}, &connection.Error{Code: connection.EUnavailable, Message: "the access token cannot be refreshed right now; retry later", RetryAfter: ra, Err: err}
}

// Outcome of a refresh attempt, for the sweep's summary.
type Outcome int

const (
	// Skipped: no longer due when re-read (someone refreshed it).
	Skipped Outcome = iota
	Refreshed
	// MarkedReconnect: Microsoft refused the grant; status changed.
	MarkedReconnect
	TransientFailure
	ConfigurationFailure
)

// Result of a refresh.
type Result struct {
	Outcome Outcome
	Conn    connection.Connection
}

// RefreshIfDue is the sweep's entry: re-read the connection and refresh it
// when the sweep policy still finds it due.
func (s *Service) RefreshIfDue(ctx context.Context, userID string) (Outcome, error) {
	res, err := s.refreshShared(ctx, userID, func(cur connection.Connection, now time.Time) bool {
		return s.Policy.DueForSweep(cur, now)
	}, false)
	switch {
	case err == nil:
		return res.Outcome, nil
	case errors.Is(err, connection.ErrNotFound), errors.Is(err, connection.ErrPaused):
		// Paused (this connection after AADSTS50196, or this instance
		// after a 429): nothing was sent, so nothing failed.
		return Skipped, nil
	case errors.Is(err, connection.ErrReconnectRequired):
		return MarkedReconnect, nil
	}
	if connection.ClassOf(err) == connection.ClassConfiguration {
		return ConfigurationFailure, err
	}
	return TransientFailure, err
}

// refreshShared runs one refresh per user per instance; concurrent callers
// share its result. due is evaluated on a fresh read inside the flight.
func (s *Service) refreshShared(ctx context.Context, userID string, due func(connection.Connection, time.Time) bool, used bool) (Result, error) {
	ch := s.flight.DoChan(userID, func() (any, error) {
		// DoChan runs this on its own goroutine: background work Close
		// waits for.
		if !s.track() {
			return Result{}, errClosed
		}
		defer s.bg.Done()
		// Detached from the first caller: others may be waiting on it, and
		// a refresh Microsoft already performed must be stored. Close
		// cancels it only once its own bound is spent.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.refreshTimeout())
		defer cancel()
		defer context.AfterFunc(s.life.hard(), cancel)()
		return s.refresh(fctx, userID, due, used)
	})
	select {
	case <-ctx.Done():
		return Result{}, fmt.Errorf("tokens: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return Result{}, r.Err
		}
		return r.Val.(Result), nil
	}
}

// usable reads userID's connection with its tokens: connection.ErrNotFound
// when there is none, connection.ErrReconnectRequired when its grant is
// gone (only connecting again helps).
func (s *Service) usable(ctx context.Context, userID string) (connection.Connection, error) {
	c, err := s.Store.Get(ctx, userID)
	if errors.Is(err, connection.ErrNotFound) {
		return c, connection.ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("tokens: read: %w", err)
	}
	if c.Status == connection.StatusReconnectRequired {
		return c, connection.ErrReconnectRequired
	}
	return c, nil
}

func (s *Service) refresh(ctx context.Context, userID string, due func(connection.Connection, time.Time) bool, used bool) (Result, error) {
	c, err := s.usable(ctx, userID)
	if err != nil {
		return Result{}, err
	}
	now := s.now()
	if !due(c, now) {
		return Result{Outcome: Skipped, Conn: c}, nil // another instance did it
	}
	if wait := c.PausedFor(now); wait > 0 {
		return Result{Outcome: Skipped, Conn: c}, &pausedError{wait: wait}
	}
	log := s.Log.With().Str("user_id", userID).Logger()
	grant, err := s.Refresher.Refresh(ctx, c.RefreshToken)
	if err != nil {
		return s.failed(ctx, log, c, err)
	}
	now = s.now()
	for attempt := 0; ; attempt++ {
		next := apply(c, grant, now, used)
		saved, err := s.Store.Update(ctx, next)
		if err == nil {
			log.Info().Str("event", "refreshed").Time("access_token_expires_at", saved.AccessTokenExpiresAt).Msg("token refreshed")
			return Result{Outcome: Refreshed, Conn: saved}, nil
		}
		if !errors.Is(err, connection.ErrConflict) || attempt >= 4 {
			if errors.Is(err, connection.ErrNotFound) {
				// Disconnected while we refreshed: the user asked for the
				// tokens to be gone, so ours are dropped too.
				return Result{}, connection.ErrNotFound
			}
			// The old row is intact and its refresh token still works
			// (Microsoft does not revoke it on rotation).
			log.Error().Str("event", "refresh_failed").Str("class", "transient").Err(err).Msg("could not store the refreshed token")
			return Result{}, fmt.Errorf("tokens: store refreshed token: %w", err)
		}
		cur, gerr := s.Store.Get(ctx, userID)
		if errors.Is(gerr, connection.ErrNotFound) {
			return Result{}, connection.ErrNotFound
		}
		if gerr != nil {
			return Result{}, fmt.Errorf("tokens: re-read after conflict: %w", gerr)
		}
		if cur.RefreshToken != c.RefreshToken || cur.ConnectedAt != c.ConnectedAt {
			// Another instance refreshed (or the user reconnected): its
			// tokens are at least as new as ours. Adopt them.
			if cur.Status == connection.StatusReconnectRequired {
				return Result{}, connection.ErrReconnectRequired
			}
			return Result{Outcome: Skipped, Conn: cur}, nil
		}
		// Only bookkeeping changed (LastUsedAt, say): re-apply our grant
		// on the fresh row so the rotated refresh token is kept.
		c = cur
	}
}

// apply puts a grant on a connection. A missing refresh token keeps the old
// one (Microsoft may omit it).
func apply(c connection.Connection, g connection.Grant, now time.Time, used bool) connection.Connection {
	c.AccessToken = g.AccessToken
	if g.RefreshToken != "" {
		c.RefreshToken = g.RefreshToken
	}
	c.AccessTokenExpiresAt = g.ExpiresAt
	if len(g.Scopes) > 0 {
		// offline_access stays granted while we hold a refresh token.
		c.Scopes = connection.NormalizeScopes(g.Scopes, c.RefreshToken != "")
	}
	c.LastRefreshedAt = now
	c.LastError = nil
	c.ThrottledUntil = time.Time{}
	if used {
		c.LastUsedAt = now
	}
	return c
}

// failed turns a refresh error into its class's outcome.
func (s *Service) failed(ctx context.Context, log zerolog.Logger, c connection.Connection, err error) (Result, error) {
	class := connection.ClassOf(err)
	code := connection.CodeOf(err, "refresh_failed")
	switch class {
	case connection.ClassReconnectRequired:
		log.Warn().Str("event", "refresh_failed").Str("class", class.String()).Str("code", code).Err(err).Msg("Microsoft refused the refresh token: the user must connect again")
		if err := s.markReconnect(ctx, c, code); err != nil {
			return Result{}, err
		}
		return Result{Outcome: MarkedReconnect}, connection.ErrReconnectRequired
	case connection.ClassConfiguration:
		log.Error().Str("event", "refresh_failed").Str("class", class.String()).Str("code", code).Err(err).Msg("Microsoft rejected our app credentials or registration; no connection is blamed")
		return Result{Outcome: ConfigurationFailure}, &connection.Error{Code: connection.ENotConfigured,
			Message:    "Microsoft rejected the connector's app credentials; an administrator must fix the configuration (see the log)",
			RetryAfter: ConfigurationRetryAfter, Err: err}
	default:
		if connection.ThrottleScopeOf(err) == connection.ThrottleConnection {
			err = &delayedError{err: err, wait: s.pause(ctx, log, c, err)}
		}
		ev := log.Warn().Str("event", "refresh_failed").Str("class", class.String()).Str("code", code).Err(err)
		if ra, ok := connection.RetryAfterOf(err); ok {
			ev = ev.Float64("retry_after_s", ra.Seconds())
		}
		ev.Msg("refresh failed for now; status unchanged")
		return Result{Outcome: TransientFailure}, fmt.Errorf("tokens: refresh: %w", err)
	}
}

// pause stores the pause AADSTS50196 asks for in the connection's row
// (ThrottledUntil), conditional on the ETag, and logs `throttled` with the
// user_id. A lost race re-reads: if the row now holds other tokens (another
// instance refreshed, or the user reconnected), that newer grant is not
// the one Microsoft's loop detection stopped, so it is left unpaused.
// A pause that cannot be stored is logged; the next call then meets
// Microsoft's refusal again and tries to store it again.
func (s *Service) pause(ctx context.Context, log zerolog.Logger, c connection.Connection, err error) time.Duration {
	wait, ok := connection.RetryAfterOf(err)
	if !ok {
		wait = DefaultThrottlePause
	}
	until := s.now().Add(wait)
	log.Warn().Str("event", "throttled").Float64("retry_after_s", wait.Seconds()).Str("code", connection.CodeOf(err, "throttled")).
		Time("throttled_until", until).Msg("Microsoft detected a request loop for this user (AADSTS50196); pausing this connection's refreshes")
	for attempt := 0; attempt < 5; attempt++ {
		if !until.After(c.ThrottledUntil) {
			return wait // already paused at least this long
		}
		next := c
		next.ThrottledUntil = until
		_, uerr := s.Store.Update(ctx, next)
		if uerr == nil || errors.Is(uerr, connection.ErrNotFound) {
			return wait
		}
		if !errors.Is(uerr, connection.ErrConflict) {
			log.Error().Str("event", "throttle_store_failed").Err(uerr).Msg("could not store the connection's throttling pause")
			return wait
		}
		cur, gerr := s.Store.Get(ctx, c.UserID)
		if gerr != nil {
			if !errors.Is(gerr, connection.ErrNotFound) {
				log.Error().Str("event", "throttle_store_failed").Err(gerr).Msg("could not re-read the connection to store its throttling pause")
			}
			return wait
		}
		if cur.RefreshToken != c.RefreshToken || !cur.ConnectedAt.Equal(c.ConnectedAt) || cur.Status != c.Status {
			return wait
		}
		c = cur // only bookkeeping changed: pause the fresh row
	}
	log.Error().Str("event", "throttle_store_failed").Msg("could not store the connection's throttling pause: the row kept changing")
	return wait
}

// DefaultThrottlePause is a connection's pause after AADSTS50196 when
// Microsoft gave no Retry-After (contract "Throttling": 60 s).
const DefaultThrottlePause = time.Minute

// delayedError is a refresh that met AADSTS50196: its RetryAfter is the
// connection's pause, so the token API's Retry-After matches it.
type delayedError struct {
	err  error
	wait time.Duration
}

func (e *delayedError) Error() string             { return e.err.Error() }
func (e *delayedError) Unwrap() error             { return e.err }
func (e *delayedError) RetryAfter() time.Duration { return e.wait }

// pausedError: the refresh was not sent because the connection is paused.
type pausedError struct{ wait time.Duration }

func (e *pausedError) Error() string {
	return fmt.Sprintf("tokens: connection paused for %s: %v", e.wait, connection.ErrPaused)
}
func (e *pausedError) Unwrap() error             { return connection.ErrPaused }
func (e *pausedError) RetryAfter() time.Duration { return e.wait }

// markReconnect sets reconnect_required, conditional on the ETag. If the row
// changed meanwhile (the user reconnected, another instance refreshed with a
// newer token), the newer row wins and is left alone.
func (s *Service) markReconnect(ctx context.Context, c connection.Connection, code string) error {
	now := s.now()
	next := c
	next.Status = connection.StatusReconnectRequired
	next.LastError = &connection.LastError{Code: code, At: now}
	acct := c.Account
	// The event is stored with the status (the outbox), so it is as
	// durable as the change.
	ev := s.Events.Prepare(connection.Event{Type: connection.EventReconnectRequired, UserID: c.UserID, At: now, Account: &acct, Reason: code})
	if _, err := s.Store.UpdateWithEvent(ctx, next, ev); err != nil {
		if errors.Is(err, connection.ErrConflict) || errors.Is(err, connection.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("tokens: mark reconnect_required: %w", err)
	}
	// A failed enqueue is logged by the publisher and left to the sweep;
	// the status is stored either way.
	s.Events.Send(ctx, ev)
	return nil
}

// touch records that the CMS used the connection, at most every
// UsageGranularity and off the request path: a token read must stay a
// single Table read.
func (s *Service) touch(c connection.Connection, now time.Time) {
	if now.Sub(c.LastUsedAt) < connection.UsageGranularity {
		return
	}
	if _, busy := s.touching.LoadOrStore(c.UserID, struct{}{}); busy {
		return
	}
	if !s.track() {
		s.touching.Delete(c.UserID)
		return
	}
	go func() {
		defer s.bg.Done()
		defer s.touching.Delete(c.UserID)
		// Advisory: Close cancels it at once.
		ctx, cancel := context.WithTimeout(s.life.soft(), 10*time.Second)
		defer cancel()
		c.LastUsedAt = now
		// A conflict means someone else wrote: the usage mark is advisory.
		if _, err := s.Store.Update(ctx, c); err != nil && !errors.Is(err, connection.ErrConflict) && !errors.Is(err, connection.ErrNotFound) {
			s.Log.Debug().Str("event", "usage_mark_failed").Str("user_id", c.UserID).Err(err).Msg("could not record token usage")
		}
	}()
}

// track counts one more piece of background work, unless the Service is
// closed. The caller runs it and calls s.bg.Done when it ends.
func (s *Service) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.bg.Add(1)
	return true
}

// Close ends the Service's background work and waits for it, at most until
// ctx is done: it cancels the usage writes at once (they are advisory),
// lets a shared refresh in flight store what Microsoft answered, and
// cancels that too when ctx ends first (then it returns ctx's error).
// Background work asked for later does not start: a refresh fails with
// errClosed, a usage mark is skipped. Call it once no request can reach
// the Service any more (app.Serve: after the HTTP server's Shutdown).
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.life.stopSoft()
	done := make(chan struct{})
	go func() { s.bg.Wait(); close(done) }()
	select {
	case <-done:
		s.life.stopHard()
		return nil
	case <-ctx.Done():
		s.life.stopHard()
		return fmt.Errorf("tokens: close: %w", ctx.Err())
	}
}

// errClosed answers a refresh asked for after Close.
var errClosed = errors.New("tokens: closed")

// lifetime is the Service's two background contexts, made on first use:
// soft ends when Close starts, hard when Close returns.
type lifetime struct {
	once               sync.Once
	softCtx, hardCtx   context.Context
	softStop, hardStop context.CancelFunc
}

func (l *lifetime) init() {
	l.once.Do(func() {
		l.hardCtx, l.hardStop = context.WithCancel(context.Background())
		l.softCtx, l.softStop = context.WithCancel(l.hardCtx)
	})
}

func (l *lifetime) soft() context.Context { l.init(); return l.softCtx }
func (l *lifetime) hard() context.Context { l.init(); return l.hardCtx }
func (l *lifetime) stopSoft()             { l.init(); l.softStop() }
func (l *lifetime) stopHard()             { l.init(); l.hardStop() }

func tokenOf(c connection.Connection) Token {
	return Token{AccessToken: c.AccessToken, ExpiresAt: c.AccessTokenExpiresAt, Scopes: connection.AccessScopes(c.Scopes)}
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		panic("tokens: Service.Now is required")
	}
	return s.Now().UTC()
}

func (s *Service) refreshTimeout() time.Duration {
	if s.RefreshTimeout > 0 {
		return s.RefreshTimeout
	}
	return 30 * time.Second
}
