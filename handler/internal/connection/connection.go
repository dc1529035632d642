// Package connection is the connector's domain: a CMS user's Microsoft
// connection, its status, the classes of Microsoft's failures and the refresh
// policy. It owns no I/O: it imports neither Azure, net/http nor Microsoft's
// wire formats. Adapters (tablestore, msidentity, httpapi, ...) depend on it,
// never the reverse.
package connection

import (
	"fmt"
	"time"
)

// Status is the stable, admin-queryable state of a connection.
type Status string

const (
	// StatusConnected means the stored refresh token is believed to work.
	StatusConnected Status = "connected"
	// StatusReconnectRequired means Microsoft definitively refused the
	// refresh token (invalid_grant, interaction_required, ...): only the user
	// can fix it by connecting again. Such a connection is never refreshed.
	StatusReconnectRequired Status = "reconnect_required"
)

// Valid reports whether s is one of the contract's statuses.
func (s Status) Valid() bool { return s == StatusConnected || s == StatusReconnectRequired }

// Account identifies the Microsoft account behind a connection. ID and
// TenantID are the id_token's oid and tid: the only stable identity (Graph's
// /me id differs for personal accounts).
type Account struct {
	ID          string
	TenantID    string
	Email       string
	DisplayName string
}

// LastError is the last failure worth showing to the CMS: a stable code (for
// example "invalid_grant") and when it happened.
type LastError struct {
	Code string
	At   time.Time
}

// Connection is one CMS user's link to one Microsoft account.
//
// AccessToken and RefreshToken are plaintext in memory only; stores seal them
// at rest. String and MarshalZerologObject never print them.
type Connection struct {
	UserID  string
	Status  Status
	Account Account
	// Scopes are the scopes Microsoft granted, as it reported them.
	Scopes []string

	AccessToken          string
	RefreshToken         string
	AccessTokenExpiresAt time.Time

	ConnectedAt     time.Time
	LastRefreshedAt time.Time
	// LastUsedAt is when the CMS last asked for a token (updated at most
	// every UsageGranularity to keep token reads cheap). The timer
	// pre-refreshes only recently used connections.
	LastUsedAt time.Time
	LastError  *LastError
	// ThrottledUntil pauses this connection's refreshes until then, on
	// every instance and in the sweep: Microsoft answered AADSTS50196 (its
	// loop detection for one user and app). Zero when not paused. It is
	// stored in the row, like everything else, with an ETag-conditional
	// write.
	ThrottledUntil time.Time

	// ETag is the store's opaque version of this row; every update is
	// conditional on it. Empty for a connection not yet stored.
	ETag string
}

// UsageGranularity bounds how often a token read writes LastUsedAt back.
const UsageGranularity = 15 * time.Minute

// String prints a connection for debugging without any token.
func (c Connection) String() string {
	return fmt.Sprintf("connection{user_id:%q status:%s account:%s tenant:%s access_token:%t refresh_token:%t expires:%s etag:%q}",
		c.UserID, c.Status, c.Account.ID, c.Account.TenantID, c.AccessToken != "", c.RefreshToken != "",
		c.AccessTokenExpiresAt.UTC().Format(time.RFC3339), c.ETag)
}

// PausedFor is what remains of the connection's throttling pause at now;
// 0 when it is not paused.
func (c Connection) PausedFor(now time.Time) time.Duration {
	if d := c.ThrottledUntil.Sub(now); d > 0 {
		return d
	}
	return 0
}

// GoString keeps %#v from printing tokens too.
func (c Connection) GoString() string { return c.String() }
