package connection

import (
	"context"
	"time"
)

// Store keeps connections. Implementations seal tokens at rest and make every
// update conditional on the ETag. They must be safe for concurrent use.
// tablestore implements it; its conformance suite (tablestore/storetest)
// runs against every implementation.
type Store interface {
	// Get returns the connection with its tokens, or ErrNotFound.
	Get(ctx context.Context, userID string) (Connection, error)
	// Peek returns the connection WITHOUT its tokens (status fields only),
	// or ErrNotFound. It needs no encryption key: status reads and deletes
	// work while a key version cannot be read.
	Peek(ctx context.Context, userID string) (Connection, error)
	// Create stores a new connection; ErrConflict if one exists.
	Create(ctx context.Context, c Connection) (Connection, error)
	// Update replaces c if its stored ETag still equals c.ETag: ErrConflict
	// if it changed, ErrNotFound if it is gone. Returns c with its new ETag.
	// Tokens are sealed again with the current key.
	Update(ctx context.Context, c Connection) (Connection, error)
	// Delete removes the connection; nil if there was none.
	Delete(ctx context.Context, userID string) error
	// List returns one page of connections WITHOUT tokens (status fields
	// only), in no particular order; across pages each appears exactly once.
	List(ctx context.Context, q ListQuery) (Page, error)
	// Outbox entries live beside the connection they report on; List,
	// Get and Peek never return them.
	OutboxStore
}

// ListQuery selects a page. Cursor is opaque and comes from a previous Page.
type ListQuery struct {
	Status Status // empty: any
	Limit  int    // 1..1000
	Cursor string
}

// Page is one page of a listing. NextCursor is empty on the last page.
type Page struct {
	Connections []Connection
	NextCursor  string
}

// PendingKind tells a connect session from an OAuth state.
type PendingKind string

const (
	// PendingSession is created by POST /api/connect-sessions and consumed
	// by GET /api/connect.
	PendingSession PendingKind = "session"
	// PendingState is created by GET /api/connect and consumed by the
	// callback.
	PendingState PendingKind = "state"
	// PendingNotice marks that a once-a-day notice (secret_expiring) was
	// logged: its conditional create is what makes it once across
	// instances. It carries no user and expires after two days.
	PendingNotice PendingKind = "notice"
	// PendingConnect is the signed-in result the callback keeps until the
	// CMS completes it (POST /api/connections/{user_id}/complete): ID is
	// the hash of the connect code, Grant holds the tokens (sealed at
	// rest). Spent by DeletePending.
	PendingConnect PendingKind = "connect"
)

// Pending is a single-use connect session, OAuth state or pending connect.
// Only a hash of the token the browser carries is stored (ID). Verifier and
// Grant's tokens are sealed at rest.
type Pending struct {
	Kind        PendingKind
	ID          string // hex SHA-256 of the bearer token (session, state or connect code)
	UserID      string
	ReturnURL   string
	LoginHint   string
	Verifier    string // PKCE code_verifier (states only); sealed at rest
	BrowserHash string // hex SHA-256 of the browser-binding cookie (states only)
	// Grant is the signed-in result of a pending connect (connects only):
	// its Account (oid, tid, e-mail, name), normalized Scopes and tokens.
	Grant     Grant
	CreatedAt time.Time
	ExpiresAt time.Time
	Used      bool
	ETag      string
}

// String never prints the verifier or a token.
func (p Pending) String() string {
	return "pending{kind:" + string(p.Kind) + " user_id:" + p.UserID + " used:" + boolStr(p.Used) + " verifier:" + boolStr(p.Verifier != "") + " grant:" + p.Grant.String() + "}"
}

// GoString keeps %#v from printing the verifier too.
func (p Pending) GoString() string { return p.String() }

// Unstored is p as a new entry for PutPending: the same ID, contents and
// expiry, without the ETag of the row it was read from.
func (p Pending) Unstored() Pending {
	p.ETag = ""
	return p
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// PendingStore keeps connect sessions, states and pending connects (table
// connectsessions).
type PendingStore interface {
	// PutPending stores a new pending entry; ErrConflict if the ID exists.
	PutPending(ctx context.Context, p Pending) error
	// GetPending returns the entry or ErrNotFound.
	GetPending(ctx context.Context, kind PendingKind, id string) (Pending, error)
	// MarkUsed sets Used on p if its ETag is unchanged: of two racing
	// callers exactly one succeeds, the other gets ErrConflict.
	MarkUsed(ctx context.Context, p Pending) error
	// DeletePending removes p if its stored ETag still equals p.ETag: of
	// racing callers holding the same read exactly one succeeds, the others
	// get ErrConflict (or ErrNotFound once it is gone). It spends a pending
	// connect: the sealed tokens leave the table with the row.
	DeletePending(ctx context.Context, p Pending) error
	// DeleteExpired removes entries that expired before t; returns how many.
	DeleteExpired(ctx context.Context, t time.Time) (int, error)
}
