package connection

import (
	"context"
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

// Publisher delivers events without ever blocking the caller.
type Publisher interface {
	Publish(e Event)
}

// NopPublisher drops events (no CMS_WEBHOOK_URL).
type NopPublisher struct{}

// Publish does nothing.
func (NopPublisher) Publish(Event) {}
