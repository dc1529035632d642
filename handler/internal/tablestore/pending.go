package tablestore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Columns of the connectsessions table. PartitionKey is Pending.ID (the hex
// SHA-256 of the bearer token), RowKey the kind ("session", "state",
// "notice" or "connect"). A pending connect also uses the connections
// table's account, scope and token columns; its tokens are sealed like a
// connection's, with this row's keys as additional data.
const (
	colReturnURL      = "ReturnURL"
	colLoginHint      = "LoginHint"
	colVerifierSealed = "VerifierSealed"
	colBrowserHash    = "BrowserHash"
	colCreatedAt      = "CreatedAt"
	colExpiresAt      = "ExpiresAt"
	colUsed           = "Used"
	// colUserID and colKeyVersion are shared with the connections table.
)

// pendingAAD is the additional data sealing a pending entry's field:
// "connectsessions|<PartitionKey>|<RowKey>|<field>", field "Verifier" for
// the PKCE verifier, the sealed column's name for a pending connect's
// tokens. A sealed value copied to another entry or field does not open.
func pendingAAD(id string, kind connection.PendingKind, field string) []byte {
	return []byte("connectsessions|" + id + "|" + string(kind) + "|" + field)
}

// ErrInvalidPending: a pending entry (or its key) that cannot be stored.
var ErrInvalidPending = errors.New("invalid pending entry")

// ValidPendingKey accepts the known kinds and an ID that is a lower-case hex
// SHA-256, the only IDs connectflow makes: anything else is a bug upstream,
// and refusing it keeps arbitrary text out of the table's keys. Errors wrap
// ErrInvalidPending.
func ValidPendingKey(kind connection.PendingKind, id string) error {
	switch kind {
	case connection.PendingSession, connection.PendingState, connection.PendingNotice, connection.PendingConnect:
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidPending, kind)
	}
	if len(id) != 64 {
		return fmt.Errorf("%w: id is not a hex SHA-256", ErrInvalidPending)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: id is not a lower-case hex SHA-256", ErrInvalidPending)
		}
	}
	return nil
}

// PutPending stores a new entry; an error wrapping connection.ErrConflict if
// its ID and kind exist. CreatedAt defaults to now; ExpiresAt is required
// (DeleteExpired could never remove an entry without one).
func (s *Store) PutPending(ctx context.Context, p connection.Pending) error {
	if err := ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("tablestore: put pending: %w", err)
	}
	if err := connection.ValidUserID(p.UserID); err != nil {
		return fmt.Errorf("tablestore: put pending: %w", err)
	}
	if p.ExpiresAt.IsZero() {
		return fmt.Errorf("tablestore: put pending: %w: no expiry", ErrInvalidPending)
	}
	if err := s.ready(ctx, "put pending"); err != nil {
		return err
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = s.now()
	}
	props := map[string]any{
		colUserID:      p.UserID,
		colReturnURL:   p.ReturnURL,
		colLoginHint:   p.LoginHint,
		colBrowserHash: p.BrowserHash,
		colUsed:        p.Used,
	}
	setTime(props, colCreatedAt, p.CreatedAt)
	setTime(props, colExpiresAt, p.ExpiresAt)
	if g := p.Grant; p.Kind == connection.PendingConnect {
		setAccount(props, g.Account, g.Scopes)
		setTime(props, colAccessTokenExpiresAt, g.ExpiresAt)
	}
	for _, f := range []struct{ col, field, value string }{
		{colVerifierSealed, "Verifier", p.Verifier},
		{colAccessTokenSealed, colAccessTokenSealed, p.Grant.AccessToken},
		{colRefreshTokenSealed, colRefreshTokenSealed, p.Grant.RefreshToken},
	} {
		if f.value == "" {
			continue
		}
		sealed, version, err := s.seal(ctx, f.value, pendingAAD(p.ID, p.Kind, f.field))
		if err != nil {
			return fmt.Errorf("tablestore: put pending: %s: %w", f.col, err)
		}
		props[f.col] = sealed
		props[colKeyVersion] = version
	}
	body, err := marshalEntity(p.ID, string(p.Kind), props)
	if err != nil {
		return fmt.Errorf("tablestore: put pending: %w", err)
	}
	if _, err := s.pending.AddEntity(ctx, body, nil); err != nil {
		return fmt.Errorf("tablestore: put pending: %w", mapError(err))
	}
	return nil
}

// GetPending returns the entry with its verifier opened, or an error
// wrapping connection.ErrNotFound. Expired and used entries are returned as
// they are: the caller decides.
func (s *Store) GetPending(ctx context.Context, kind connection.PendingKind, id string) (connection.Pending, error) {
	if err := ValidPendingKey(kind, id); err != nil {
		return connection.Pending{}, fmt.Errorf("tablestore: get pending: %w", err)
	}
	if err := s.ready(ctx, "get pending"); err != nil {
		return connection.Pending{}, err
	}
	resp, err := s.pending.GetEntity(ctx, id, string(kind), nil)
	if err != nil {
		return connection.Pending{}, fmt.Errorf("tablestore: get pending: %w", mapError(err))
	}
	e, err := parseEntity(resp.Value)
	if err != nil {
		return connection.Pending{}, fmt.Errorf("tablestore: get pending: %w", err)
	}
	p := connection.Pending{Kind: kind, ID: id, ETag: string(resp.ETag)}
	r := &columns{e: e}
	r.str(colUserID, &p.UserID)
	r.str(colReturnURL, &p.ReturnURL)
	r.str(colLoginHint, &p.LoginHint)
	r.str(colBrowserHash, &p.BrowserHash)
	r.time(colCreatedAt, &p.CreatedAt)
	r.time(colExpiresAt, &p.ExpiresAt)
	r.bool(colUsed, &p.Used)
	if r.err == nil {
		p.Verifier, r.err = s.open(ctx, e, colVerifierSealed, pendingAAD(id, kind, "Verifier"))
	}
	if kind == connection.PendingConnect {
		r.account(&p.Grant.Account, &p.Grant.Scopes)
		r.time(colAccessTokenExpiresAt, &p.Grant.ExpiresAt)
		if r.err == nil {
			p.Grant.AccessToken, r.err = s.open(ctx, e, colAccessTokenSealed, pendingAAD(id, kind, colAccessTokenSealed))
		}
		if r.err == nil {
			p.Grant.RefreshToken, r.err = s.open(ctx, e, colRefreshTokenSealed, pendingAAD(id, kind, colRefreshTokenSealed))
		}
	}
	if r.err != nil {
		return connection.Pending{}, fmt.Errorf("tablestore: get pending: %w", r.err)
	}
	return p, nil
}

// MarkUsed sets Used if the entry's ETag still equals p.ETag. Of any number
// of racing callers holding the same read, exactly one succeeds; the others
// get an error wrapping connection.ErrConflict (connection.ErrNotFound if
// the entry is gone). An entry already read as used is a conflict too.
func (s *Store) MarkUsed(ctx context.Context, p connection.Pending) error {
	if err := ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("tablestore: mark used: %w", err)
	}
	switch {
	case p.Used:
		return fmt.Errorf("tablestore: mark used: %w: already used", connection.ErrConflict)
	case p.ETag == "":
		return fmt.Errorf("tablestore: mark used: %w: pending entry has no etag", connection.ErrConflict)
	}
	if err := s.ready(ctx, "mark used"); err != nil {
		return err
	}
	// Merge touches only Used: the sealed verifier stays as written, with
	// no need to seal it again.
	body, err := marshalEntity(p.ID, string(p.Kind), map[string]any{colUsed: true})
	if err != nil {
		return fmt.Errorf("tablestore: mark used: %w", err)
	}
	etag := azcore.ETag(p.ETag)
	if _, err := s.pending.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeMerge}); err != nil {
		return fmt.Errorf("tablestore: mark used: %w", mapError(err))
	}
	return nil
}

// DeletePending deletes the entry if its ETag still equals p.ETag: of any
// number of racing callers holding the same read, exactly one succeeds;
// the others get an error wrapping connection.ErrConflict (412) or
// connection.ErrNotFound (the winner's delete landed first). It is how a
// pending connect is spent: the sealed tokens leave the table with the row,
// so a spent code cannot be replayed even by someone holding the key.
func (s *Store) DeletePending(ctx context.Context, p connection.Pending) error {
	if err := ValidPendingKey(p.Kind, p.ID); err != nil {
		return fmt.Errorf("tablestore: delete pending: %w", err)
	}
	if p.ETag == "" {
		// An unconditional delete would let two callers both "win".
		return fmt.Errorf("tablestore: delete pending: %w: pending entry has no etag", connection.ErrConflict)
	}
	if err := s.ready(ctx, "delete pending"); err != nil {
		return err
	}
	etag := azcore.ETag(p.ETag)
	if _, err := s.pending.DeleteEntity(ctx, p.ID, string(p.Kind), &aztables.DeleteEntityOptions{IfMatch: &etag}); err != nil {
		return fmt.Errorf("tablestore: delete pending: %w", mapError(err))
	}
	return nil
}

// DeleteExpired deletes the entries whose ExpiresAt is before t and returns
// how many it deleted. It scans page by page (only the keys), so the number
// of entries is not bounded by memory; entries deleted concurrently by
// another instance are skipped, not counted.
func (s *Store) DeleteExpired(ctx context.Context, t time.Time) (int, error) {
	if err := s.ready(ctx, "delete expired"); err != nil {
		return 0, err
	}
	filter := colExpiresAt + " lt " + odataDateTime(t)
	keys := "PartitionKey,RowKey"
	top := s.pageSize
	pager := s.pending.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter, Select: &keys, Top: &top})
	deleted := 0
	for pager.More() {
		resp, err := pager.NextPage(ctx)
		if err != nil {
			return deleted, fmt.Errorf("tablestore: delete expired: %w", err)
		}
		for _, raw := range resp.Entities {
			e, err := parseEntity(raw)
			if err != nil {
				return deleted, fmt.Errorf("tablestore: delete expired: %w", err)
			}
			pk, err := e.str("PartitionKey")
			if err != nil {
				return deleted, fmt.Errorf("tablestore: delete expired: %w", err)
			}
			rk, err := e.str("RowKey")
			if err != nil {
				return deleted, fmt.Errorf("tablestore: delete expired: %w", err)
			}
			if _, err := s.pending.DeleteEntity(ctx, pk, rk, nil); err != nil {
				if isNotFound(err) {
					continue
				}
				return deleted, fmt.Errorf("tablestore: delete expired: %w", err)
			}
			deleted++
		}
	}
	return deleted, nil
}
