package tablestore_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

func TestProbe(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	if err := f.store.Probe(context.Background()); err != nil {
		t.Fatalf("Probe: %v", err)
	}
	// Written, read and deleted: nothing is left in either table.
	if rows := rawEntities(t, f.pending); len(rows) != 0 {
		t.Errorf("probe left %d rows in connectsessions: %v", len(rows), rows)
	}
	if rows := rawEntities(t, f.conns); len(rows) != 0 {
		t.Errorf("probe wrote to connections: %v", rows)
	}

	// A table that is gone is a failed step, named.
	if _, err := f.svc.DeleteTable(context.Background(), f.opts.PendingTable, nil); err != nil {
		t.Fatal(err)
	}
	err := f.store.Probe(context.Background())
	var pe *tablestore.ProbeError
	if !errors.As(err, &pe) || !strings.Contains(pe.Step, f.opts.PendingTable) {
		t.Errorf("Probe without connectsessions: %v, want a ProbeError naming the table", err)
	}
}

func sweepRecord(finished time.Time, connected int64) connection.SweepRecord {
	return connection.SweepRecord{
		StartedAt: finished.Add(-3 * time.Second), FinishedAt: finished, DurationMS: 3000,
		Due: 5, Refreshed: 4, ReconnectRequired: 1, TransientFailures: 0, Skipped: 0,
		Connections:  map[connection.Status]int64{connection.StatusConnected: connected, connection.StatusReconnectRequired: 2},
		MissingScope: 1,
	}
}

func TestSweepRecord(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	ctx := context.Background()
	if _, err := f.store.LastSweep(ctx); !errors.Is(err, connection.ErrNotFound) {
		t.Fatalf("LastSweep before any sweep: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	first := sweepRecord(t0, 10)
	if err := f.store.RecordSweep(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := sweepRecord(t0.Add(5*time.Minute), 11)
	if err := f.store.RecordSweep(ctx, second); err != nil {
		t.Fatal(err)
	}
	// An overlapping sweep that finished earlier but writes later does not
	// replace the newer record.
	if err := f.store.RecordSweep(ctx, sweepRecord(t0.Add(time.Minute), 99)); err != nil {
		t.Fatal(err)
	}

	// Another Store (another instance, or this one restarted) reads it.
	other := tablestore.New(f.svc, f.sealer, f.opts)
	got, err := other.LastSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, second) {
		t.Errorf("LastSweep = %+v, want %+v", got, second)
	}

	// One row, in connectsessions, out of every user's and session's way:
	// the sweep's clean-up of expired entries leaves it.
	if _, err := f.store.DeleteExpired(ctx, t0.Add(365*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows := rawEntities(t, f.pending)
	if len(rows) != 1 || rows[0]["PartitionKey"] != "diagnostics" || rows[0]["RowKey"] != "sweep" {
		t.Fatalf("connectsessions rows = %v, want the one diagnostics/sweep row", rows)
	}
	page, err := f.store.List(ctx, connection.ListQuery{Limit: 100})
	if err != nil || len(page.Connections) != 0 {
		t.Errorf("the listing shows %d connections (%v), want none", len(page.Connections), err)
	}
}

// Concurrent writers (overlapping sweeps on two instances) end with the
// latest finish stored, whatever the order of their conditional writes.
func TestSweepRecordRaces(t *testing.T) {
	f := newFixture(t, tablestore.Options{})
	ctx := context.Background()
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() { errs <- f.store.RecordSweep(ctx, sweepRecord(t0.Add(time.Duration(i)*time.Second), int64(i))) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("RecordSweep: %v", err)
		}
	}
	got, err := f.store.LastSweep(ctx)
	if err != nil || !got.FinishedAt.Equal(t0.Add(3*time.Second)) {
		t.Errorf("after the race: %v %v, want the sweep that finished last", got.FinishedAt, err)
	}
}
