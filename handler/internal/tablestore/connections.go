package tablestore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/sealing"
)

// rowMicrosoft is the RowKey of every connection: one row per (user,
// provider), and Microsoft is the only provider.
const rowMicrosoft = "microsoft"

// Columns of the connections table (docs/architecture.md, Storage layout).
const (
	colUserID               = "UserID"
	colStatus               = "Status"
	colAccountID            = "AccountID"
	colTenantID             = "TenantID"
	colEmail                = "Email"
	colDisplayName          = "DisplayName"
	colScopes               = "Scopes" // space-separated, as OAuth writes scopes
	colAccessTokenExpiresAt = "AccessTokenExpiresAt"
	colConnectedAt          = "ConnectedAt"
	colLastRefreshedAt      = "LastRefreshedAt"
	colLastUsedAt           = "LastUsedAt"
	colLastErrorCode        = "LastErrorCode"
	colLastErrorAt          = "LastErrorAt"
	// colThrottledUntil pauses the connection's refreshes (AADSTS50196):
	// plain, so every instance and the sweep's listing see it.
	colThrottledUntil     = "ThrottledUntil"
	colAccessTokenSealed  = "AccessTokenSealed"
	colRefreshTokenSealed = "RefreshTokenSealed"
	// colKeyVersion is the token-encryption key version of the row's sealed
	// columns, plain so an admin can find rows still on an old key. Open
	// reads the version from the sealed text itself, never from here.
	colKeyVersion = "KeyVersion"
)

// listSelect is every plain column: List never fetches sealed ones, so
// tokens are neither transferred nor decrypted to list connections.
var listSelect = strings.Join([]string{
	"PartitionKey", "RowKey",
	colUserID, colStatus, colAccountID, colTenantID, colEmail, colDisplayName, colScopes,
	colAccessTokenExpiresAt, colConnectedAt, colLastRefreshedAt, colLastUsedAt,
	colLastErrorCode, colLastErrorAt, colThrottledUntil,
}, ",")

// connectionAAD is the additional data sealing a connections column:
// "connections|<PartitionKey>|<RowKey>|<column>". A sealed value moved to
// another user's row, or from one token column to the other, does not open.
// The table is named by its role, not its configured name, so rows keep
// opening if the table is renamed or copied.
func connectionAAD(partitionKey, column string) []byte {
	return []byte("connections|" + partitionKey + "|" + rowMicrosoft + "|" + column)
}

// Get returns the connection with its tokens opened, or an error wrapping
// connection.ErrNotFound.
func (s *Store) Get(ctx context.Context, userID string) (connection.Connection, error) {
	return s.get(ctx, "get", userID, true)
}

// Peek returns the connection without its tokens: it does not open the
// sealed columns (aztables' GetEntity has no $select, so they are fetched
// and dropped), so a status read or a delete works even while the key
// that sealed them cannot be read.
func (s *Store) Peek(ctx context.Context, userID string) (connection.Connection, error) {
	return s.get(ctx, "peek", userID, false)
}

func (s *Store) get(ctx context.Context, op, userID string, tokens bool) (connection.Connection, error) {
	if err := connection.ValidUserID(userID); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: %s: %w", op, err)
	}
	if err := s.ready(ctx, op); err != nil {
		return connection.Connection{}, err
	}
	resp, err := s.conns.GetEntity(ctx, partitionKey(userID), rowMicrosoft, nil)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: %s: %w", op, mapError(err))
	}
	e, err := parseEntity(resp.Value)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: %s: %w", op, err)
	}
	c, err := s.decodeConnection(ctx, e, tokens)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: %s: %w", op, err)
	}
	c.ETag = string(resp.ETag)
	return c, nil
}

// Create adds c; an error wrapping connection.ErrConflict if the user
// already has a connection. ConnectedAt defaults to now. It returns c with
// its ETag.
func (s *Store) Create(ctx context.Context, c connection.Connection) (connection.Connection, error) {
	if err := ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", err)
	}
	if err := s.ready(ctx, "create"); err != nil {
		return connection.Connection{}, err
	}
	if c.ConnectedAt.IsZero() {
		c.ConnectedAt = s.now()
	}
	body, err := s.encodeConnection(ctx, c)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", err)
	}
	resp, err := s.conns.AddEntity(ctx, body, nil)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", mapError(err))
	}
	c.ETag = string(resp.ETag)
	return c, nil
}

// Update replaces the stored row if its ETag still equals c.ETag (an error
// wrapping connection.ErrConflict if not, connection.ErrNotFound if the row
// is gone). Tokens are sealed again with the current key. It returns c with
// the new ETag.
func (s *Store) Update(ctx context.Context, c connection.Connection) (connection.Connection, error) {
	if err := ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", err)
	}
	if c.ETag == "" {
		// An unconditional write could undo a concurrent refresh and lose a
		// rotated refresh token: refuse it like a lost race.
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w: connection has no etag", connection.ErrConflict)
	}
	if err := s.ready(ctx, "update"); err != nil {
		return connection.Connection{}, err
	}
	body, err := s.encodeConnection(ctx, c)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", err)
	}
	etag := azcore.ETag(c.ETag)
	resp, err := s.conns.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", mapError(err))
	}
	c.ETag = string(resp.ETag)
	return c, nil
}

// Delete removes the user's connection, unconditionally; nil if there was
// none.
func (s *Store) Delete(ctx context.Context, userID string) error {
	if err := connection.ValidUserID(userID); err != nil {
		return fmt.Errorf("tablestore: delete: %w", err)
	}
	if err := s.ready(ctx, "delete"); err != nil {
		return err
	}
	if _, err := s.conns.DeleteEntity(ctx, partitionKey(userID), rowMicrosoft, nil); err != nil && !isNotFound(err) {
		return fmt.Errorf("tablestore: delete: %w", err)
	}
	return nil
}

// List returns one page of connections without tokens: only plain columns
// are fetched. It asks the service for at most the rest of q.Limit per
// request and follows continuations until the page is full or the table
// ends, holding no more than one page in memory. The cursor carries the
// service's continuation, so across pages every connection appears exactly
// once, whatever changes between requests.
func (s *Store) List(ctx context.Context, q connection.ListQuery) (connection.Page, error) {
	if err := ValidListQuery(q); err != nil {
		return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
	}
	var next continuation
	if q.Cursor != "" {
		var err error
		if next, err = decodeCursor(q.Cursor, q.Status); err != nil {
			return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
		}
	}
	if err := s.ready(ctx, "list"); err != nil {
		return connection.Page{}, err
	}
	// Only connection rows: the outbox rows beside them are not
	// connections (outbox.go).
	filter := connectionsOnly
	if q.Status != "" {
		// ValidListQuery allows only the two statuses: nothing to escape.
		filter += " and " + colStatus + " eq '" + string(q.Status) + "'"
	}
	opts := aztables.ListEntitiesOptions{Select: &listSelect, Filter: &filter}
	page := connection.Page{Connections: make([]connection.Connection, 0, min(q.Limit, 100))}
	for {
		top := int32(q.Limit - len(page.Connections))
		opts.Top = &top
		opts.NextPartitionKey, opts.NextRowKey = next.pk(), next.rk()
		resp, err := s.conns.NewListEntitiesPager(&opts).NextPage(ctx)
		if err != nil {
			return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
		}
		if len(resp.Entities) > int(top) {
			// Keeping the extra would overfill the page, dropping it would
			// lose rows: the cursor would be wrong either way.
			return connection.Page{}, fmt.Errorf("tablestore: list: service returned %d entities for $top=%d", len(resp.Entities), top)
		}
		for _, raw := range resp.Entities {
			e, err := parseEntity(raw)
			if err != nil {
				return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
			}
			c, err := s.decodeConnection(ctx, e, false)
			if err != nil {
				return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
			}
			if c.ETag, err = e.str("odata.etag"); err != nil {
				return connection.Page{}, fmt.Errorf("tablestore: list: %w", err)
			}
			page.Connections = append(page.Connections, c)
		}
		next = continuation{PK: deref(resp.NextPartitionKey), RK: deref(resp.NextRowKey)}
		if next.done() {
			return page, nil
		}
		if len(page.Connections) == q.Limit {
			page.NextCursor = encodeCursor(next, q.Status)
			return page, nil
		}
	}
}

// ErrInvalidConnection: a connection no valid row can hold.
var ErrInvalidConnection = errors.New("invalid connection")

// ValidConnection refuses what no valid row can hold: an invalid user_id
// (wrapping connection.ErrInvalidUserID) or an unknown status (ErrInvalidConnection).
func ValidConnection(c connection.Connection) error {
	if err := connection.ValidUserID(c.UserID); err != nil {
		return err
	}
	if !c.Status.Valid() {
		return fmt.Errorf("%w: unknown status %q", ErrInvalidConnection, c.Status)
	}
	return nil
}

// ErrInvalidQuery: a ListQuery outside the contract (limit 1-1000, status
// empty or one of the statuses).
var ErrInvalidQuery = errors.New("invalid list query")

// ValidListQuery checks q's limit and status (not its cursor, which only
// the store that issued it can read). Errors wrap ErrInvalidQuery.
func ValidListQuery(q connection.ListQuery) error {
	if q.Limit < 1 || q.Limit > 1000 {
		return fmt.Errorf("%w: limit %d not in 1..1000", ErrInvalidQuery, q.Limit)
	}
	if q.Status != "" && !q.Status.Valid() {
		return fmt.Errorf("%w: unknown status %q", ErrInvalidQuery, q.Status)
	}
	return nil
}

func (s *Store) encodeConnection(ctx context.Context, c connection.Connection) ([]byte, error) {
	pk := partitionKey(c.UserID)
	props := map[string]any{colUserID: c.UserID, colStatus: string(c.Status)}
	setAccount(props, c.Account, c.Scopes)
	setTime(props, colAccessTokenExpiresAt, c.AccessTokenExpiresAt)
	setTime(props, colConnectedAt, c.ConnectedAt)
	setTime(props, colLastRefreshedAt, c.LastRefreshedAt)
	setTime(props, colLastUsedAt, c.LastUsedAt)
	setTime(props, colThrottledUntil, c.ThrottledUntil)
	if c.LastError != nil {
		props[colLastErrorCode] = c.LastError.Code
		setTime(props, colLastErrorAt, c.LastError.At)
	}
	for _, f := range []struct{ col, value string }{
		{colAccessTokenSealed, c.AccessToken},
		{colRefreshTokenSealed, c.RefreshToken},
	} {
		if f.value == "" {
			continue // nothing to protect; an absent column reads back as ""
		}
		sealed, version, err := s.seal(ctx, f.value, connectionAAD(pk, f.col))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.col, err)
		}
		props[f.col] = sealed
		props[colKeyVersion] = version
	}
	return marshalEntity(pk, rowMicrosoft, props)
}

// seal seals plaintext and returns the key version named in the result.
func (s *Store) seal(ctx context.Context, plaintext string, aad []byte) (sealed, version string, err error) {
	sealed, err = s.sealer.Seal(ctx, []byte(plaintext), aad)
	if err != nil {
		return "", "", err
	}
	version, err = sealing.KeyVersion(sealed)
	if err != nil {
		return "", "", err
	}
	return sealed, version, nil
}

// open opens a sealed column; an absent column is "".
func (s *Store) open(ctx context.Context, e rawEntity, col string, aad []byte) (string, error) {
	sealed, err := e.str(col)
	if err != nil || sealed == "" {
		return "", err
	}
	plain, err := s.sealer.Open(ctx, sealed, aad)
	if err != nil {
		return "", fmt.Errorf("%s: %w", col, err)
	}
	return string(plain), nil
}

// decodeConnection reads a connections entity; tokens only when asked.
func (s *Store) decodeConnection(ctx context.Context, e rawEntity, withTokens bool) (connection.Connection, error) {
	var c connection.Connection
	pk, err := e.str("PartitionKey")
	if err != nil {
		return c, err
	}
	r := &columns{e: e}
	var status string
	var lastErr connection.LastError
	r.str(colUserID, &c.UserID)
	r.str(colStatus, &status)
	r.account(&c.Account, &c.Scopes)
	r.str(colLastErrorCode, &lastErr.Code)
	r.time(colAccessTokenExpiresAt, &c.AccessTokenExpiresAt)
	r.time(colConnectedAt, &c.ConnectedAt)
	r.time(colLastRefreshedAt, &c.LastRefreshedAt)
	r.time(colLastUsedAt, &c.LastUsedAt)
	r.time(colLastErrorAt, &lastErr.At)
	r.time(colThrottledUntil, &c.ThrottledUntil)
	if r.err != nil {
		return c, fmt.Errorf("row %s: %w", pk, r.err)
	}
	if c.UserID != pk || connection.ValidUserID(c.UserID) != nil {
		// The key is the user_id; a mismatch means a row written by hand,
		// by another program, or by v1 under its escaped keys (a v1 row of
		// "a/b" has the key "a~2Fb", a valid v2 id of someone else). Refuse
		// to guess rather than hand one user's tokens to another.
		return c, fmt.Errorf("row %s: column %s %q does not match the partition key", pk, colUserID, c.UserID)
	}
	c.Status = connection.Status(status)
	if lastErr.Code != "" || !lastErr.At.IsZero() {
		c.LastError = &lastErr
	}
	if withTokens {
		if c.AccessToken, err = s.open(ctx, e, colAccessTokenSealed, connectionAAD(pk, colAccessTokenSealed)); err != nil {
			return c, fmt.Errorf("row %s: %w", pk, err)
		}
		if c.RefreshToken, err = s.open(ctx, e, colRefreshTokenSealed, connectionAAD(pk, colRefreshTokenSealed)); err != nil {
			return c, fmt.Errorf("row %s: %w", pk, err)
		}
	}
	return c, nil
}

// continuation is the service's paging position.
type continuation struct {
	PK string `json:"pk"`
	RK string `json:"rk,omitempty"`
}

func (c continuation) done() bool { return c.PK == "" && c.RK == "" }

func (c continuation) pk() *string {
	if c.PK == "" {
		return nil
	}
	return &c.PK
}

func (c continuation) rk() *string {
	if c.RK == "" {
		return nil
	}
	return &c.RK
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// cursorVersion changes whenever the cursor's meaning does: older cursors
// are then refused as bad, not misread.
const cursorVersion = 1

// cursor is what NextCursor carries (connection.EncodeCursor's format):
// the continuation plus the header binding it to its status filter.
type cursor struct {
	connection.CursorHeader
	continuation
}

func encodeCursor(next continuation, status connection.Status) string {
	return connection.EncodeCursor(cursor{connection.NewCursorHeader(cursorVersion, status), next})
}

// decodeCursor returns the continuation in s, or an error wrapping
// connection.ErrBadCursor if s is not a cursor List issued for status.
func decodeCursor(s string, status connection.Status) (continuation, error) {
	var c cursor
	if err := connection.DecodeCursor(s, &c, cursorVersion, status); err != nil {
		return continuation{}, err
	}
	if c.continuation.done() {
		return continuation{}, fmt.Errorf("%w: no position", connection.ErrBadCursor)
	}
	return c.continuation, nil
}
