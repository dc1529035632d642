// Package sweep is the timer's background refresh: it streams every
// connection page by page, hands the due ones to a fixed pool of workers,
// stops starting work before its deadline or after a configuration error,
// deletes expired connect sessions and reports a summary. Memory grows with
// the concurrency and the page size, never with the number of connections.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	// Deadline: no new refresh starts after this long, so the sweep ends
	// well inside the function timeout.
	Deadline time.Duration
	// PageSize of the listing (default 1000, the Table service's maximum).
	PageSize int
	// Housekeeping runs once per sweep after the refreshes (secret expiry
	// reminders); its error is logged, never fatal.
	Housekeeping func(ctx context.Context) error
	Log          zerolog.Logger
	Now          func() time.Time

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

// Run performs one sweep. It returns an error only when it could not list
// connections at all; per-connection failures are counted.
func (s *Sweeper) Run(ctx context.Context) (Summary, error) {
	start := s.now()
	var sum Summary
	deadline := start.Add(s.deadline())
	// The listing and the workers stop together on the deadline or on a
	// configuration error; refreshes already running finish (they are
	// bounded by the token service's own timeout).
	stopCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	timer := time.AfterFunc(s.deadline(), func() { stop(errDeadline) })
	defer timer.Stop()

	work := make(chan string, s.concurrency())
	var wg sync.WaitGroup
	for i := 0; i < s.concurrency(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for userID := range work {
				if stopCtx.Err() != nil || !s.now().Before(deadline) {
					atomic.AddInt64(&sum.Skipped, 1)
					continue
				}
				out, err := s.Tokens.RefreshIfDue(context.WithoutCancel(stopCtx), userID)
				switch out {
				case tokens.Refreshed:
					atomic.AddInt64(&sum.Refreshed, 1)
				case tokens.MarkedReconnect:
					atomic.AddInt64(&sum.ReconnectRequired, 1)
				case tokens.TransientFailure:
					atomic.AddInt64(&sum.TransientFailures, 1)
				case tokens.ConfigurationFailure:
					// Every further call would fail the same way: stop
					// rather than hammer Microsoft.
					atomic.AddInt64(&sum.TransientFailures, 1)
					stop(fmt.Errorf("%w: %v", errConfiguration, err))
				default:
					atomic.AddInt64(&sum.Skipped, 1)
				}
			}
		}()
	}

	listErr := s.list(stopCtx, &sum, work)
	close(work)
	wg.Wait()

	switch cause := context.Cause(stopCtx); {
	case errors.Is(cause, errDeadline):
		sum.StoppedBy = "deadline"
	case errors.Is(cause, errConfiguration):
		sum.StoppedBy = "configuration"
	case listErr != nil:
		sum.StoppedBy = "listing"
	}

	if n, err := s.Pending.DeleteExpired(ctx, s.now()); err != nil {
		s.Log.Warn().Str("event", "sessions_cleanup_failed").Err(err).Msg("could not delete expired connect sessions")
	} else {
		sum.SessionsDeleted = n
	}
	if s.Housekeeping != nil {
		if err := s.Housekeeping(ctx); err != nil {
			s.Log.Warn().Err(err).Msg("sweep housekeeping failed")
		}
	}

	sum.DurationMS = s.now().Sub(start).Milliseconds()
	s.record(ctx, start, sum)
	ev := s.Log.Info()
	if sum.StoppedBy != "" {
		ev = s.Log.Warn()
	}
	ev.Str("event", "refresh_swept").
		Int64("due", sum.Due).Int64("refreshed", sum.Refreshed).
		Int64("reconnect_required", sum.ReconnectRequired).
		Int64("transient_failures", sum.TransientFailures).
		Int64("skipped", sum.Skipped).Int64("connections_total", sum.ConnectionsTotal).
		Int("sessions_deleted", sum.SessionsDeleted).Int64("duration_ms", sum.DurationMS).
		Str("stopped_by", sum.StoppedBy).Msg("refresh sweep finished")
	if listErr != nil && !errors.Is(listErr, context.Canceled) {
		return sum, fmt.Errorf("sweep: list connections: %w", listErr)
	}
	return sum, nil
}

var (
	errDeadline      = errors.New("sweep deadline reached")
	errConfiguration = errors.New("configuration error")
)

// list streams pages into the workers. A due connection that cannot be
// handed over before the stop is counted as skipped. After a stop the
// listing ends too, so connections_total then counts what was listed (the
// log's stopped_by says so).
func (s *Sweeper) list(ctx context.Context, sum *Summary, work chan<- string) error {
	q := connection.ListQuery{Limit: s.pageSize()}
	for {
		if ctx.Err() != nil {
			return nil
		}
		page, err := s.Store.List(ctx, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.Log.Error().Str("event", "sweep_list_failed").Err(err).Msg("could not list connections")
			return err
		}
		now := s.now()
		for _, c := range page.Connections {
			sum.ConnectionsTotal++
			s.tally(sum, c)
			if !s.Policy.DueForSweep(c, now) {
				continue
			}
			atomic.AddInt64(&sum.Due, 1)
			if c.PausedFor(now) > 0 {
				// Microsoft stopped a request loop for this user
				// (AADSTS50196): its row says until when. The token
				// service re-checks on its fresh read too.
				atomic.AddInt64(&sum.Skipped, 1)
				continue
			}
			select {
			case work <- c.UserID:
			case <-ctx.Done():
				atomic.AddInt64(&sum.Skipped, 1)
			}
		}
		if page.NextCursor == "" {
			return nil
		}
		q.Cursor = page.NextCursor
	}
}

func (s *Sweeper) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

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
