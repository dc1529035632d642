package tablestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// The diagnostics rows live in the connectsessions table under the
// PartitionKey "diagnostics". No connect session, state, pending connect or
// notice can have it (their PartitionKeys are 64 lower-case hex digits), no
// listing of connections ever reads that table, and the sweep's clean-up
// deletes only rows with an ExpiresAt in the past: the sweep record has
// none, a probe row has one ten minutes ahead (so even a probe whose delete
// failed is cleaned up). In the connections table the record would need a
// filter in every listing and would disturb an admin counting rows by
// Status.
const (
	diagPartition = "diagnostics"
	rowSweep      = "sweep"
	probePrefix   = "probe-"
	// connectionsProbeKey is a PartitionKey no user can have (':' is not
	// in contract v2's user_id alphabet, connection.ValidUserID): reading
	// it proves the connections table answers without touching a user's row.
	connectionsProbeKey = ":probe"

	colFinishedAt = "FinishedAt"
	colSummary    = "Summary"
	colProbe      = "Probe"
)

// ProbeError is a failed Probe: Step says which ("read table connections",
// "write to table connectsessions", ...), Err is the service's error (an
// *azcore.ResponseError when the service answered).
type ProbeError struct {
	Step string
	Err  error
}

func (e *ProbeError) Error() string { return "tablestore: probe: " + e.Step + ": " + e.Err.Error() }

// Unwrap exposes the service's error to errors.As.
func (e *ProbeError) Unwrap() error { return e.Err }

// Probe proves Table Storage works for both tables: it makes sure they
// exist, reads the connections table (a query for a key no user can have),
// and writes, reads back and deletes a probe row in connectsessions. The
// error names the step that failed.
func (s *Store) Probe(ctx context.Context) error {
	if err := s.ensure(ctx); err != nil {
		return &ProbeError{Step: "create tables", Err: err}
	}
	filter := "PartitionKey eq '" + connectionsProbeKey + "'"
	keys := "PartitionKey"
	top := int32(1)
	if _, err := s.conns.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter, Select: &keys, Top: &top}).NextPage(ctx); err != nil {
		return &ProbeError{Step: "read table " + s.names[0], Err: err}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("tablestore: probe: %w", err)
	}
	rk, want := probePrefix+hex.EncodeToString(b[:]), hex.EncodeToString(b[:])
	now := s.now().UTC()
	props := map[string]any{colProbe: want}
	setTime(props, colCreatedAt, now)
	setTime(props, colExpiresAt, now.Add(10*time.Minute))
	body, err := marshalEntity(diagPartition, rk, props)
	if err != nil {
		return fmt.Errorf("tablestore: probe: %w", err)
	}
	if _, err := s.pending.AddEntity(ctx, body, nil); err != nil {
		return &ProbeError{Step: "write to table " + s.names[1], Err: err}
	}
	resp, err := s.pending.GetEntity(ctx, diagPartition, rk, nil)
	if err != nil {
		return &ProbeError{Step: "read back from table " + s.names[1], Err: err}
	}
	e, err := parseEntity(resp.Value)
	if err != nil {
		return fmt.Errorf("tablestore: probe: %w", err)
	}
	if got, _ := e.str(colProbe); got != want {
		return &ProbeError{Step: "read back from table " + s.names[1], Err: errors.New("another value than was written")}
	}
	if _, err := s.pending.DeleteEntity(ctx, diagPartition, rk, nil); err != nil {
		return &ProbeError{Step: "delete from table " + s.names[1], Err: err}
	}
	return nil
}

// sweepRecordJSON is the Summary column: JSON, readable by an admin in the
// portal's table browser.
type sweepRecordJSON struct {
	StartedAt         time.Time        `json:"started_at"`
	FinishedAt        time.Time        `json:"finished_at"`
	DurationMS        int64            `json:"duration_ms"`
	Due               int64            `json:"due"`
	Refreshed         int64            `json:"refreshed"`
	ReconnectRequired int64            `json:"reconnect_required"`
	TransientFailures int64            `json:"transient_failures"`
	Skipped           int64            `json:"skipped"`
	StoppedBy         string           `json:"stopped_by,omitempty"`
	Connections       map[string]int64 `json:"connections"`
	MissingScope      int64            `json:"missing_scope"`
}

// RecordSweep stores r as the last sweep unless a sweep that finished later
// is already stored. Writes are ETag-conditional (insert when missing,
// If-Match otherwise) and retried after a lost race, so of two overlapping
// sweeps (a timer lease lost during a long sweep, a manual run) the one
// that finished last is kept, whatever order their writes arrive in.
func (s *Store) RecordSweep(ctx context.Context, r connection.SweepRecord) error {
	if r.FinishedAt.IsZero() {
		return errors.New("tablestore: record sweep: no finish time")
	}
	if err := s.ready(ctx, "record sweep"); err != nil {
		return err
	}
	rec := sweepRecordJSON{
		StartedAt: r.StartedAt.UTC(), FinishedAt: r.FinishedAt.UTC(), DurationMS: r.DurationMS,
		Due: r.Due, Refreshed: r.Refreshed, ReconnectRequired: r.ReconnectRequired,
		TransientFailures: r.TransientFailures, Skipped: r.Skipped, StoppedBy: r.StoppedBy,
		Connections: map[string]int64{}, MissingScope: r.MissingScope,
	}
	for st, n := range r.Connections {
		rec.Connections[string(st)] = n
	}
	summary, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("tablestore: record sweep: %w", err)
	}
	props := map[string]any{colSummary: string(summary)}
	setTime(props, colFinishedAt, r.FinishedAt)
	body, err := marshalEntity(diagPartition, rowSweep, props)
	if err != nil {
		return fmt.Errorf("tablestore: record sweep: %w", err)
	}
	for attempt := 0; attempt < 8; attempt++ {
		cur, etag, err := s.lastSweep(ctx)
		switch {
		case errors.Is(err, connection.ErrNotFound):
			_, err = s.pending.AddEntity(ctx, body, nil)
		case err != nil:
			return fmt.Errorf("tablestore: record sweep: %w", err)
		case cur.FinishedAt.After(r.FinishedAt):
			return nil // a later sweep's record stands
		default:
			_, err = s.pending.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		}
		if err == nil {
			return nil
		}
		if err = mapError(err); !errors.Is(err, connection.ErrConflict) {
			return fmt.Errorf("tablestore: record sweep: %w", err)
		}
	}
	return fmt.Errorf("tablestore: record sweep: %w: lost eight races in a row", connection.ErrConflict)
}

// LastSweep returns the last recorded sweep; an error wrapping
// connection.ErrNotFound when no sweep has been recorded.
func (s *Store) LastSweep(ctx context.Context) (connection.SweepRecord, error) {
	if err := s.ready(ctx, "last sweep"); err != nil {
		return connection.SweepRecord{}, err
	}
	r, _, err := s.lastSweep(ctx)
	if err != nil {
		return connection.SweepRecord{}, fmt.Errorf("tablestore: last sweep: %w", err)
	}
	return r, nil
}

func (s *Store) lastSweep(ctx context.Context) (connection.SweepRecord, azcore.ETag, error) {
	resp, err := s.pending.GetEntity(ctx, diagPartition, rowSweep, nil)
	if err != nil {
		return connection.SweepRecord{}, "", mapError(err)
	}
	e, err := parseEntity(resp.Value)
	if err != nil {
		return connection.SweepRecord{}, "", err
	}
	raw, err := e.str(colSummary)
	if err != nil {
		return connection.SweepRecord{}, "", err
	}
	var rec sweepRecordJSON
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return connection.SweepRecord{}, "", fmt.Errorf("column %s is not a sweep summary: %w", colSummary, err)
	}
	r := connection.SweepRecord{
		StartedAt: rec.StartedAt, FinishedAt: rec.FinishedAt, DurationMS: rec.DurationMS,
		Due: rec.Due, Refreshed: rec.Refreshed, ReconnectRequired: rec.ReconnectRequired,
		TransientFailures: rec.TransientFailures, Skipped: rec.Skipped, StoppedBy: rec.StoppedBy,
		Connections: map[connection.Status]int64{}, MissingScope: rec.MissingScope,
	}
	for st, n := range rec.Connections {
		r.Connections[connection.Status(st)] = n
	}
	return r, resp.ETag, nil
}
