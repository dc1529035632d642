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

// Publisher makes an event durable: it returns once the event is stored
// for delivery (on the webhook queue), never waiting for the CMS. Call it
// after the change the event reports is stored and before answering
// whoever caused it, so the event is as durable as the change.
//
// An error means the event is lost; the publisher has logged it
// (webhook_dropped). Callers do not fail their request on it: the change
// is stored, and their own answer reports it.
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}

// NopPublisher drops events (no CMS_WEBHOOK_URL).
type NopPublisher struct{}

// Publish does nothing.
func (NopPublisher) Publish(context.Context, Event) error { return nil }

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
