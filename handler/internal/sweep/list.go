package sweep

import (
	"sync/atomic"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// list streams pages into the workers. A due connection that cannot be
// handed over before the stop is counted as skipped. After a stop the
// listing ends too, so connections_total then counts what was listed (the
// log's stopped_by says so).
func (r *run) list(work chan<- string) error {
	s, sum := r.s, &r.sum
	q := connection.ListQuery{Limit: s.pageSize()}
	for {
		if r.ctx.Err() != nil || r.pastDeadline() {
			return nil
		}
		page, err := s.Store.List(r.ctx, q)
		if err != nil {
			if r.ctx.Err() != nil {
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
			case <-r.ctx.Done():
				atomic.AddInt64(&sum.Skipped, 1)
			}
		}
		if page.NextCursor == "" {
			return nil
		}
		q.Cursor = page.NextCursor
	}
}
