// Package tablestore is the Azure Table Storage adapter (aztables) behind
// connection.Store and connection.PendingStore. It owns the storage layout
// of docs/architecture.md: the encoding of user_ids into keys, the entity
// columns, the sealing of tokens and verifiers with each row's keys as
// additional data, ETag-conditional writes, and opaque listing cursors.
//
// It must not touch the HTTP API or Microsoft, and it never sees key bytes:
// sealing is injected as a Sealer.
package tablestore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Default table names (contract: Storage).
const (
	DefaultConnectionsTable = "connections"
	DefaultPendingTable     = "connectsessions"
)

// Sealer encrypts and authenticates column values. sealing.Sealer
// implements it. aad binds a sealed value to its row and column, so a value
// copied to another row or column does not open.
type Sealer interface {
	Seal(ctx context.Context, plaintext, aad []byte) (string, error)
	Open(ctx context.Context, sealed string, aad []byte) ([]byte, error)
}

// Options configure a Store. The zero value uses the contract's table names
// and the real clock.
type Options struct {
	// ConnectionsTable and PendingTable name the tables; empty means
	// DefaultConnectionsTable and DefaultPendingTable. Tests use unique
	// names to stay independent on one emulator.
	ConnectionsTable string
	PendingTable     string
	// Now stamps Connection.ConnectedAt and Pending.CreatedAt when the
	// caller left them zero. Required (time.Now in production): New panics
	// without it.
	Now func() time.Time
}

// Store implements connection.Store and connection.PendingStore on Azure
// Table Storage. It is safe for concurrent use.
type Store struct {
	svc     *aztables.ServiceClient
	conns   *aztables.Client
	pending *aztables.Client
	names   [2]string
	sealer  Sealer
	now     func() time.Time
	// pageSize bounds each service page of DeleteExpired's scan (the
	// service's own maximum is 1000); tests lower it to exercise paging.
	pageSize int32

	ensureMu sync.Mutex
	ensured  atomic.Bool
}

var (
	_ connection.Store        = (*Store)(nil)
	_ connection.PendingStore = (*Store)(nil)
)

// New returns a Store using svc for I/O and s for sealing. It does no I/O:
// the tables are created on first use (or by EnsureTables).
func New(svc *aztables.ServiceClient, s Sealer, opts Options) *Store {
	conns, pending := opts.ConnectionsTable, opts.PendingTable
	if conns == "" {
		conns = DefaultConnectionsTable
	}
	if pending == "" {
		pending = DefaultPendingTable
	}
	now := opts.Now
	if now == nil {
		// A programming error, found by the first test that builds a
		// Store: the clock is required, as in go-oidc's Config.
		panic("tablestore: New: Options.Now is required")
	}
	return &Store{
		svc:      svc,
		conns:    svc.NewClient(conns),
		pending:  svc.NewClient(pending),
		names:    [2]string{conns, pending},
		sealer:   s,
		now:      now,
		pageSize: 1000,
	}
}

// EnsureTables creates both tables unless they exist. It is idempotent and
// safe to race with other instances doing the same. Every other method
// makes sure of the tables once before its first request, so calling it at
// start-up only moves the cost (and any configuration error) earlier.
func (s *Store) EnsureTables(ctx context.Context) error {
	if err := s.ensure(ctx); err != nil {
		return fmt.Errorf("tablestore: ensure tables: %w", err)
	}
	return nil
}

// ready makes sure the tables exist before a request.
func (s *Store) ready(ctx context.Context, op string) error {
	if err := s.ensure(ctx); err != nil {
		return fmt.Errorf("tablestore: %s: %w", op, err)
	}
	return nil
}

func (s *Store) ensure(ctx context.Context) error {
	if s.ensured.Load() {
		return nil
	}
	s.ensureMu.Lock()
	defer s.ensureMu.Unlock()
	if s.ensured.Load() {
		return nil
	}
	for _, name := range s.names {
		if _, err := s.svc.CreateTable(ctx, name, nil); err != nil {
			var re *azcore.ResponseError
			if errors.As(err, &re) && re.ErrorCode == string(aztables.TableAlreadyExists) {
				continue
			}
			return fmt.Errorf("create table %s: %w", name, err)
		}
	}
	// Only success is remembered: a failure (Storage unreachable at
	// start-up) is retried by the next call instead of sticking.
	s.ensured.Store(true)
	return nil
}

// mapError classifies an aztables error into the domain's sentinels by the
// service's status and error code, keeping the original in the chain.
func mapError(err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	switch {
	case re.StatusCode == http.StatusNotFound && re.ErrorCode != string(aztables.TableNotFound):
		// A missing entity; a missing table (deleted under us) is an
		// outage, not "not connected".
		return fmt.Errorf("%w: %w", connection.ErrNotFound, err)
	case re.StatusCode == http.StatusConflict && re.ErrorCode == string(aztables.EntityAlreadyExists),
		re.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: %w", connection.ErrConflict, err)
	}
	return err
}

// isNotFound reports a missing entity (not a missing table).
func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound && re.ErrorCode != string(aztables.TableNotFound)
}
