package connection

import (
	"context"
	"strings"
	"time"
)

// Grant is what Microsoft's token endpoint gave us. RefreshToken is empty
// when Microsoft returned none (the caller keeps the old one). Account is
// set only when an id_token came with it (code exchange).
type Grant struct {
	AccessToken  string
	RefreshToken string
	ExpiresAt    time.Time
	Scopes       []string
	Account      Account
}

// String never prints a token.
func (g Grant) String() string {
	return "grant{access_token:" + boolStr(g.AccessToken != "") + " refresh_token:" + boolStr(g.RefreshToken != "") + " expires:" + g.ExpiresAt.UTC().Format(time.RFC3339) + "}"
}

// GoString keeps %#v from printing tokens too.
func (g Grant) GoString() string { return g.String() }

// Refresher redeems a refresh token. msidentity implements it.
type Refresher interface {
	Refresh(ctx context.Context, refreshToken string) (Grant, error)
}

// Event is a change of a connection's status, for the CMS webhook.
type Event struct {
	Type    string // connection.connected, ...
	UserID  string
	At      time.Time
	Account *Account
	Reason  string
}

// Event types (contract: Events).
const (
	EventConnected         = "connection.connected"
	EventReconnectRequired = "connection.reconnect_required"
	EventRecovered         = "connection.recovered"
	EventDisconnected      = "connection.disconnected"
)

// Publisher raises webhook events through the outbox: Prepare gives an
// event its delivery ID and body, the caller stores the entry in one
// transaction with the change it reports (OutboxStore), and Send enqueues
// it and removes it. So the event is as durable as the change: a process
// killed after the store, or a queue that fails, leaves the entry for the
// sweep, which sends it with the same ID and body (at least once).
type Publisher interface {
	// Prepare returns e's outbox entry, or nil when no webhook is
	// configured or e cannot be encoded (logged): store the change alone.
	Prepare(e Event) *OutboxEntry
	// Send enqueues a stored entry and then deletes it from the outbox,
	// never waiting for the CMS. Failures are logged and leave the entry
	// for the sweep; callers do not fail their request on them. nil does
	// nothing.
	Send(ctx context.Context, e *OutboxEntry)
}

// NopPublisher drops events (no CMS_WEBHOOK_URL): no outbox entries.
type NopPublisher struct{}

// Prepare returns nil: nothing to store.
func (NopPublisher) Prepare(Event) *OutboxEntry { return nil }

// Send does nothing.
func (NopPublisher) Send(context.Context, *OutboxEntry) {}

// oidcScopes only shape the id_token; they are not permissions the CMS can
// use, so they are not reported as a connection's scopes.
var oidcScopes = map[string]bool{"openid": true, "profile": true, "email": true}

// NormalizeScopes turns the scope list Microsoft granted into the
// contract's: Graph's short names (Microsoft may answer
// https://graph.microsoft.com/Files.ReadWrite.All, or a sovereign cloud's
// host), without the OpenID Connect scopes, and with offline_access when a
// refresh token came with the grant (Microsoft never lists it, but that is
// what it granted).
func NormalizeScopes(scopes []string, refreshToken bool) []string {
	out := make([]string, 0, len(scopes)+1)
	seen := map[string]bool{}
	for _, s := range scopes {
		if i := strings.Index(s, "://"); i >= 0 {
			if j := strings.LastIndexByte(s[i+3:], '/'); j >= 0 {
				s = s[i+3+j+1:]
			}
		}
		if s == "" || oidcScopes[strings.ToLower(s)] || seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	if refreshToken && !seen["offline_access"] {
		out = append(out, "offline_access")
	}
	return out
}

// AccessScopes are the scopes of the access token itself: offline_access
// is about refresh tokens, so the token API does not report it.
func AccessScopes(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if s != "offline_access" {
			out = append(out, s)
		}
	}
	return out
}
