// Package memstore is an in-memory connection.Store and
// connection.PendingStore for fast unit tests of the services. It keeps the
// semantics of tablestore, checked by the same conformance suite
// (tablestore/storetest): ETag-conditional writes, conflicts, single-use
// pending entries, opaque paging cursors, tablestore's validation rules and
// Table Storage's 100 ns time precision. So a service tested against it
// fails the way it would against Azure.
//
// It owns no I/O and seals nothing: tokens live in this process's memory
// only. It is never used outside tests and local runs.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// Options configure a Store. The zero value uses the real clock.
type Options struct {
	// Now stamps Connection.ConnectedAt and Pending.CreatedAt when the
	// caller left them zero, as tablestore does. Required (time.Now for
	// a test that does not care).
	Now func() time.Time
}

// Store holds connections and pending entries in memory. It is safe for
// concurrent use; every method is atomic.
type Store struct {
	now func() time.Time

	mu      sync.Mutex
	etagSeq uint64 // never reused, so a row deleted and created again has a new ETag
	conns   map[string]connection.Connection
	pending map[pendingKey]connection.Pending
	// outbox holds events stored with their change, by user_id and
	// delivery ID (tablestore keeps them in the user's partition).
	outbox map[outboxKey]connection.OutboxEntry
}

type outboxKey struct{ userID, deliveryID string }

type pendingKey struct {
	kind connection.PendingKind
	id   string
}

var (
	_ connection.Store        = (*Store)(nil)
	_ connection.PendingStore = (*Store)(nil)
)

// New returns an empty Store. It panics without opts.Now: like tablestore,
// it does not choose a clock of its own.
func New(opts Options) *Store {
	if opts.Now == nil {
		panic("memstore: Options.Now is required")
	}
	return &Store{
		now:     opts.Now,
		conns:   make(map[string]connection.Connection),
		pending: make(map[pendingKey]connection.Pending),
		outbox:  make(map[outboxKey]connection.OutboxEntry),
	}
}

// nextETag must be called with mu held.
func (s *Store) nextETag() string {
	s.etagSeq++
	return `W/"mem-` + strconv.FormatUint(s.etagSeq, 10) + `"`
}

// Get returns a copy of the connection, or an error wrapping
// connection.ErrNotFound.
func (s *Store) Get(_ context.Context, userID string) (connection.Connection, error) {
	if err := connection.ValidUserID(userID); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: get: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[userID]
	if !ok {
		return connection.Connection{}, fmt.Errorf("memstore: get: %w", connection.ErrNotFound)
	}
	return clone(c), nil
}

// Peek returns the connection without its tokens.
func (s *Store) Peek(ctx context.Context, userID string) (connection.Connection, error) {
	c, err := s.Get(ctx, userID)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: peek: %w", errors.Unwrap(err))
	}
	c.AccessToken, c.RefreshToken = "", ""
	return c, nil
}

// Create stores c; an error wrapping connection.ErrConflict if the user
// already has a connection.
func (s *Store) Create(_ context.Context, c connection.Connection) (connection.Connection, error) {
	if err := tablestore.ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: create: %w", err)
	}
	if c.ConnectedAt.IsZero() {
		c.ConnectedAt = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createLocked(c, nil)
}

func (s *Store) createLocked(c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	if _, ok := s.conns[c.UserID]; ok {
		return connection.Connection{}, fmt.Errorf("memstore: create: %w", connection.ErrConflict)
	}
	if err := s.addOutboxLocked(c.UserID, ev); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: create: %w", err)
	}
	c.ETag = s.nextETag()
	s.conns[c.UserID] = normalize(c)
	if ev != nil {
		c.ETag = "" // as tablestore: a transaction's answer has no ETag
	}
	return c, nil
}

// Update replaces the connection if its ETag still equals c.ETag.
func (s *Store) Update(_ context.Context, c connection.Connection) (connection.Connection, error) {
	if err := tablestore.ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: update: %w", err)
	}
	if c.ETag == "" {
		return connection.Connection{}, fmt.Errorf("memstore: update: %w: connection has no etag", connection.ErrConflict)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateLocked(c, nil)
}

func (s *Store) updateLocked(c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	old, ok := s.conns[c.UserID]
	switch {
	case !ok:
		return connection.Connection{}, fmt.Errorf("memstore: update: %w", connection.ErrNotFound)
	case old.ETag != c.ETag:
		return connection.Connection{}, fmt.Errorf("memstore: update: %w: etag changed", connection.ErrConflict)
	}
	if err := s.addOutboxLocked(c.UserID, ev); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: update: %w", err)
	}
	c.ETag = s.nextETag()
	s.conns[c.UserID] = normalize(c)
	if ev != nil {
		c.ETag = ""
	}
	return c, nil
}

// CreateWithEvent is Create plus ev, atomically (under the one lock).
func (s *Store) CreateWithEvent(ctx context.Context, c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	if ev == nil {
		return s.Create(ctx, c)
	}
	if err := tablestore.ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: create: %w", err)
	}
	if c.ConnectedAt.IsZero() {
		c.ConnectedAt = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createLocked(c, ev)
}

// UpdateWithEvent is Update plus ev, atomically.
func (s *Store) UpdateWithEvent(ctx context.Context, c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	if ev == nil {
		return s.Update(ctx, c)
	}
	if err := tablestore.ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("memstore: update: %w", err)
	}
	if c.ETag == "" {
		return connection.Connection{}, fmt.Errorf("memstore: update: %w: connection has no etag", connection.ErrConflict)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateLocked(c, ev)
}

// DeleteWithEvent is Delete plus ev, atomically; ErrNotFound (and no
// entry) if there was no connection.
func (s *Store) DeleteWithEvent(ctx context.Context, userID string, ev *connection.OutboxEntry) error {
	if ev == nil {
		return s.Delete(ctx, userID)
	}
	if err := connection.ValidUserID(userID); err != nil {
		return fmt.Errorf("memstore: delete: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[userID]; !ok {
		return fmt.Errorf("memstore: delete: %w", connection.ErrNotFound)
	}
	if err := s.addOutboxLocked(userID, ev); err != nil {
		return fmt.Errorf("memstore: delete: %w", err)
	}
	delete(s.conns, userID)
	return nil
}

// addOutboxLocked checks and adds ev (nil: nothing), with tablestore's
// rules: the entry belongs to the changed connection's user, and its
// delivery ID is new.
func (s *Store) addOutboxLocked(userID string, ev *connection.OutboxEntry) error {
	if ev == nil {
		return nil
	}
	if err := tablestore.ValidOutboxEntry(*ev); err != nil {
		return err
	}
	if ev.UserID != userID {
		return fmt.Errorf("%w: outbox entry of user %q with a change of %q", tablestore.ErrInvalidOutbox, ev.UserID, userID)
	}
	k := outboxKey{ev.UserID, ev.DeliveryID}
	if _, ok := s.outbox[k]; ok {
		return fmt.Errorf("%w: outbox entry exists", connection.ErrConflict)
	}
	e := *ev
	e.CreatedAt = stored(e.CreatedAt)
	s.outbox[k] = e
	return nil
}

// ListOutbox returns up to limit entries created before `before`.
func (s *Store) ListOutbox(_ context.Context, before time.Time, limit int) ([]connection.OutboxEntry, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("memstore: list outbox: %w: limit %d not in 1..1000", tablestore.ErrInvalidQuery, limit)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []connection.OutboxEntry{}
	for _, e := range s.outbox {
		if len(out) == limit {
			break
		}
		if e.CreatedAt.Before(before) {
			out = append(out, e)
		}
	}
	return out, nil
}

// DeleteOutbox removes e; nil if it is gone.
func (s *Store) DeleteOutbox(_ context.Context, e connection.OutboxEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.outbox, outboxKey{e.UserID, e.DeliveryID})
	return nil
}

// Delete removes the connection; nil if there was none.
func (s *Store) Delete(_ context.Context, userID string) error {
	if err := connection.ValidUserID(userID); err != nil {
		return fmt.Errorf("memstore: delete: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, userID)
	return nil
}

// cursor is base64url JSON: the last user_id returned and the status
// filter it belongs to. Pages go in user_id order, so a connection appears
// once however the map changes between pages.
type cursor struct {
	connection.CursorHeader
	After string `json:"after"`
}

const cursorVersion = 1

// List returns one page of connections without tokens, in user_id order.
func (s *Store) List(_ context.Context, q connection.ListQuery) (connection.Page, error) {
	if err := tablestore.ValidListQuery(q); err != nil {
		return connection.Page{}, fmt.Errorf("memstore: list: %w", err)
	}
	var after string
	if q.Cursor != "" {
		c, err := decodeCursor(q.Cursor, q.Status)
		if err != nil {
			return connection.Page{}, fmt.Errorf("memstore: list: %w", err)
		}
		after = c.After
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(s.conns))
	start, _ := slices.BinarySearch(ids, after)
	if start < len(ids) && ids[start] == after && q.Cursor != "" {
		start++
	}
	page := connection.Page{Connections: []connection.Connection{}}
	for i := start; i < len(ids); i++ {
		c := s.conns[ids[i]]
		if q.Status != "" && c.Status != q.Status {
			continue
		}
		if len(page.Connections) == q.Limit {
			// There is more: the next page starts after the last one given.
			page.NextCursor = connection.EncodeCursor(cursor{connection.NewCursorHeader(cursorVersion, q.Status), page.Connections[q.Limit-1].UserID})
			break
		}
		c = clone(c)
		c.AccessToken, c.RefreshToken = "", ""
		page.Connections = append(page.Connections, c)
	}
	return page, nil
}

func decodeCursor(s string, status connection.Status) (cursor, error) {
	var c cursor
	if err := connection.DecodeCursor(s, &c, cursorVersion, status); err != nil {
		return cursor{}, err
	}
	if c.After == "" {
		return cursor{}, fmt.Errorf("%w: no position", connection.ErrBadCursor)
	}
	return c, nil
}

// PutPending stores a new entry; an error wrapping connection.ErrConflict if
// its ID and kind exist.
func (s *Store) PutPending(_ context.Context, p connection.Pending) error {
	if err := tablestore.ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("memstore: put pending: %w", err)
	}
	if err := connection.ValidUserID(p.UserID); err != nil {
		return fmt.Errorf("memstore: put pending: %w", err)
	}
	if p.ExpiresAt.IsZero() {
		return fmt.Errorf("memstore: put pending: %w: no expiry", tablestore.ErrInvalidPending)
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := pendingKey{p.Kind, p.ID}
	if _, ok := s.pending[k]; ok {
		return fmt.Errorf("memstore: put pending: %w", connection.ErrConflict)
	}
	p.ETag = s.nextETag()
	p.CreatedAt, p.ExpiresAt = stored(p.CreatedAt), stored(p.ExpiresAt)
	p.Grant = storedGrant(p.Kind, p.Grant)
	s.pending[k] = p
	return nil
}

// GetPending returns the entry or an error wrapping connection.ErrNotFound.
func (s *Store) GetPending(_ context.Context, kind connection.PendingKind, id string) (connection.Pending, error) {
	if err := tablestore.ValidPendingKey(kind, id); err != nil {
		return connection.Pending{}, fmt.Errorf("memstore: get pending: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[pendingKey{kind, id}]
	if !ok {
		return connection.Pending{}, fmt.Errorf("memstore: get pending: %w", connection.ErrNotFound)
	}
	p.Grant.Scopes = slices.Clone(p.Grant.Scopes)
	return p, nil
}

// MarkUsed sets Used if the entry's ETag still equals p.ETag: of racing
// callers holding the same read exactly one wins.
func (s *Store) MarkUsed(_ context.Context, p connection.Pending) error {
	if err := tablestore.ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("memstore: mark used: %w", err)
	}
	switch {
	case p.Used:
		return fmt.Errorf("memstore: mark used: %w: already used", connection.ErrConflict)
	case p.ETag == "":
		return fmt.Errorf("memstore: mark used: %w: pending entry has no etag", connection.ErrConflict)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, cur, err := s.pendingAt(p, "mark used")
	if err != nil {
		return err
	}
	cur.Used = true
	cur.ETag = s.nextETag()
	s.pending[k] = cur
	return nil
}

// DeletePending removes the entry if its ETag still equals p.ETag: of
// racing callers holding the same read exactly one wins.
func (s *Store) DeletePending(_ context.Context, p connection.Pending) error {
	if err := tablestore.ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("memstore: delete pending: %w", err)
	}
	if p.ETag == "" {
		return fmt.Errorf("memstore: delete pending: %w: pending entry has no etag", connection.ErrConflict)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, _, err := s.pendingAt(p, "delete pending")
	if err != nil {
		return err
	}
	delete(s.pending, k)
	return nil
}

// pendingAt returns the stored entry p was read from, if its ETag is still
// p's: the condition of every conditional pending write. s.mu is held.
func (s *Store) pendingAt(p connection.Pending, op string) (pendingKey, connection.Pending, error) {
	k := pendingKey{p.Kind, p.ID}
	cur, ok := s.pending[k]
	switch {
	case !ok:
		return k, cur, fmt.Errorf("memstore: %s: %w", op, connection.ErrNotFound)
	case cur.ETag != p.ETag:
		return k, cur, fmt.Errorf("memstore: %s: %w: etag changed", op, connection.ErrConflict)
	}
	return k, cur, nil
}

// storedGrant is what tablestore reads back: only a pending connect keeps
// its grant; times at storage precision, empty scopes nil, nothing shared.
func storedGrant(kind connection.PendingKind, g connection.Grant) connection.Grant {
	if kind != connection.PendingConnect {
		return connection.Grant{}
	}
	g.ExpiresAt = stored(g.ExpiresAt)
	if g.Scopes = strings.Fields(strings.Join(g.Scopes, " ")); len(g.Scopes) == 0 {
		g.Scopes = nil
	}
	return g
}

// DeleteExpired removes the entries that expired before t.
func (s *Store) DeleteExpired(_ context.Context, t time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.pending {
		if p.ExpiresAt.Before(t) {
			delete(s.pending, k)
			n++
		}
	}
	return n, nil
}

// stored is t as Table Storage keeps it: UTC, 100 ns ticks.
func stored(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(100 * time.Nanosecond)
}

// normalize makes c what tablestore would read back: times at storage
// precision, empty scopes nil, an empty LastError absent, and nothing shared
// with the caller.
func normalize(c connection.Connection) connection.Connection {
	c.AccessTokenExpiresAt = stored(c.AccessTokenExpiresAt)
	c.ConnectedAt = stored(c.ConnectedAt)
	c.LastRefreshedAt = stored(c.LastRefreshedAt)
	c.LastUsedAt = stored(c.LastUsedAt)
	c.ThrottledUntil = stored(c.ThrottledUntil)
	c.Scopes = strings.Fields(strings.Join(c.Scopes, " "))
	if len(c.Scopes) == 0 {
		c.Scopes = nil
	}
	if c.LastError != nil {
		le := connection.LastError{Code: c.LastError.Code, At: stored(c.LastError.At)}
		c.LastError = nil
		if le.Code != "" || !le.At.IsZero() {
			c.LastError = &le
		}
	}
	return c
}

// clone copies c's slice and pointer so callers cannot change stored state.
func clone(c connection.Connection) connection.Connection {
	c.Scopes = slices.Clone(c.Scopes)
	if c.LastError != nil {
		le := *c.LastError
		c.LastError = &le
	}
	return c
}
