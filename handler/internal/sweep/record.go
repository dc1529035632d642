package sweep

import (
	"context"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// tally counts a listed connection by status and by missing scope. Only the
// listing goroutine calls it, so the map needs no lock.
func (s *Sweeper) tally(sum *Summary, c connection.Connection) {
	if sum.Statuses == nil {
		sum.Statuses = map[connection.Status]int64{}
	}
	sum.Statuses[c.Status]++
	if len(s.RequiredScopes) > 0 && len(connection.MissingScopes(c.Scopes, s.RequiredScopes)) > 0 {
		sum.MissingScope++
	}
}

// record hands the finished sweep to Record. Diagnostics reads it from
// there, so every instance reports the same last sweep and no check has to
// scan the connections table; a failure is logged, never fatal (the sweep
// did its work). A sweep whose listing failed is not recorded: it did not
// do its work, and the timer check should turn red when no sweep has for
// an hour (sweep_list_failed says why).
func (s *Sweeper) record(ctx context.Context, start time.Time, sum Summary) {
	if s.Record == nil || sum.StoppedBy == "listing" {
		return
	}
	r := connection.SweepRecord{
		StartedAt: start, FinishedAt: s.now(), DurationMS: sum.DurationMS,
		Due: sum.Due, Refreshed: sum.Refreshed, ReconnectRequired: sum.ReconnectRequired,
		TransientFailures: sum.TransientFailures, Skipped: sum.Skipped, StoppedBy: sum.StoppedBy,
		Connections: map[connection.Status]int64{
			connection.StatusConnected:         sum.Statuses[connection.StatusConnected],
			connection.StatusReconnectRequired: sum.Statuses[connection.StatusReconnectRequired],
		},
		MissingScope: sum.MissingScope,
	}
	if err := s.Record(context.WithoutCancel(ctx), r); err != nil {
		s.Log.Warn().Str("event", "sweep_record_failed").Err(err).Msg("could not record the sweep's summary for diagnostics")
	}
}
