// Package sweep is the timer's background refresh: it streams every
// connection page by page, hands the due ones to a fixed pool of workers,
// stops starting work before its deadline or after a configuration error,
// deletes expired connect sessions and reports a summary. Memory grows with
// the concurrency and the page size, never with the number of connections.
//
// Run reads as its four seams: list (list.go) feeds work (work.go), collect
// says why the sweep stopped, and housekeeping deletes expired sessions and
// runs the hook; record.go keeps the summary for diagnostics.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tokens"
)

// Refresher is the part of the token service the sweep uses.
type Refresher interface {
	RefreshIfDue(ctx context.Context, userID string) (tokens.Outcome, error)
}

// Sweeper runs sweeps. One sweep at a time per instance (the host's timer
// lease makes it one per app).
type Sweeper struct {
	Store       connection.Store
	Pending     connection.PendingStore
	Tokens      Refresher
	Policy      connection.Policy
	Concurrency int
	// Deadline: no new refresh starts once this long has passed on Now, so
	// the sweep ends well inside the function timeout.
	Deadline time.Duration
	// PageSize of the listing (default 1000, the Table service's maximum).
	PageSize int
	// Housekeeping runs once per sweep after the refreshes (secret expiry
	// reminders); its error is logged, never fatal.
	Housekeeping func(ctx context.Context) error
	Log          zerolog.Logger
	// Now is the clock, required (time.Now in production): the deadline,
	// the due checks and the summary's times all read it.
	Now func() time.Time

	// Record keeps the summary for GET /api/diagnostics (record.go); nil
	// records nothing. RequiredScopes are MICROSOFT_SCOPES, for the count
	// of connections missing one.
	Record         func(ctx context.Context, r connection.SweepRecord) error
	RequiredScopes []string
}

// Summary is the timer's ReturnValue (contract), plus what the log adds.
type Summary struct {
	Due               int64 `json:"due"`
	Refreshed         int64 `json:"refreshed"`
	ReconnectRequired int64 `json:"reconnect_required"`
	TransientFailures int64 `json:"transient_failures"`
	Skipped           int64 `json:"skipped"`
	DurationMS        int64 `json:"duration_ms"`

	ConnectionsTotal int64 `json:"-"`
	SessionsDeleted  int   `json:"-"`
	// StoppedBy is why the sweep stopped early: "", "deadline",
	// "configuration" or "listing".
	StoppedBy string `json:"-"`

	// Statuses and MissingScope count the listed connections (record.go).
	Statuses     map[connection.Status]int64 `json:"-"`
	MissingScope int64                       `json:"-"`
}

var (
	errDeadline      = errors.New("sweep deadline reached")
	errConfiguration = errors.New("configuration error")
)

// run is one sweep's state, shared by the listing and the workers.
type run struct {
	s        *Sweeper
	sum      Summary
	deadline time.Time
	// ctx stops the listing and the workers together, on the deadline or
	// on a configuration error; stop records why. Refreshes already running
	// finish (the token service bounds them with its own timeout).
	ctx  context.Context
	stop context.CancelCauseFunc
}

// Run performs one sweep. It returns an error only when it could not list
// connections at all; per-connection failures are counted.
func (s *Sweeper) Run(ctx context.Context) (Summary, error) {
	start := s.now()
	r := &run{s: s, deadline: start.Add(s.deadline())}
	r.ctx, r.stop = context.WithCancelCause(ctx)
	defer r.stop(nil)

	listErr := r.listAndWork()
	r.collect(listErr)
	s.housekeeping(ctx, &r.sum)

	r.sum.DurationMS = s.now().Sub(start).Milliseconds()
	s.record(ctx, start, r.sum)
	s.logSummary(r.sum)
	if listErr != nil && !errors.Is(listErr, context.Canceled) {
		return r.sum, fmt.Errorf("sweep: list connections: %w", listErr)
	}
	return r.sum, nil
}

// pastDeadline reports whether no new work may start, stopping the sweep
// the first time it does. The deadline is read on the injected clock at
// every hand-over and every start of a refresh, so the sweep stops within
// one refresh of it without a timer of its own.
func (r *run) pastDeadline() bool {
	if r.s.now().Before(r.deadline) {
		return false
	}
	r.stop(errDeadline)
	return true
}

// collect says why the sweep stopped early, if it did.
func (r *run) collect(listErr error) {
	switch cause := context.Cause(r.ctx); {
	case errors.Is(cause, errDeadline):
		r.sum.StoppedBy = "deadline"
	case errors.Is(cause, errConfiguration):
		r.sum.StoppedBy = "configuration"
	case listErr != nil:
		r.sum.StoppedBy = "listing"
	}
}

// housekeeping deletes expired connect sessions and pending connects, then
// runs the Housekeeping hook. It runs whatever stopped the refreshes, on
// the caller's ctx; its failures are logged, never fatal.
func (s *Sweeper) housekeeping(ctx context.Context, sum *Summary) {
	if n, err := s.Pending.DeleteExpired(ctx, s.now()); err != nil {
		s.Log.Warn().Str("event", "sessions_cleanup_failed").Err(err).Msg("could not delete expired connect sessions")
	} else {
		sum.SessionsDeleted = n
	}
	if s.Housekeeping != nil {
		if err := s.Housekeeping(ctx); err != nil {
			s.Log.Warn().Str("event", "sweep_housekeeping_failed").Err(err).Msg("sweep housekeeping failed")
		}
	}
}

func (s *Sweeper) logSummary(sum Summary) {
	ev := s.Log.Info()
	if sum.StoppedBy != "" {
		ev = s.Log.Warn()
	}
	ev.Str("event", "refresh_swept").
		Int64("due", sum.Due).Int64("refreshed", sum.Refreshed).
		Int64("reconnect_required", sum.ReconnectRequired).
		Int64("transient_failures", sum.TransientFailures).
		Int64("skipped", sum.Skipped).Int64("connections_total", sum.ConnectionsTotal).
		// Counts by status as listed, for the workbook's "connections by
		// status" chart (the same counts diagnostics reads from the record).
		Int64("connections_connected", sum.Statuses[connection.StatusConnected]).
		Int64("connections_reconnect_required", sum.Statuses[connection.StatusReconnectRequired]).
		Int64("connections_missing_scope", sum.MissingScope).
		Int("sessions_deleted", sum.SessionsDeleted).Int64("duration_ms", sum.DurationMS).
		Str("stopped_by", sum.StoppedBy).Msg("refresh sweep finished")
}

func (s *Sweeper) now() time.Time { return s.Now().UTC() }

func (s *Sweeper) concurrency() int {
	if s.Concurrency > 0 {
		return s.Concurrency
	}
	return 16
}

func (s *Sweeper) deadline() time.Duration {
	if s.Deadline > 0 {
		return s.Deadline
	}
	return 4 * time.Minute
}

func (s *Sweeper) pageSize() int {
	if s.PageSize > 0 {
		return s.PageSize
	}
	return 1000
}
