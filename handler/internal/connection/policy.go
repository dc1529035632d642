package connection

import "time"

// Policy decides when a connection's token should be refreshed. Zero values
// are not useful: use DefaultPolicy and override from settings.
type Policy struct {
	// Margin: the token API refreshes when the access token expires within
	// this (REFRESH_MARGIN).
	Margin time.Duration
	// MaxAge: the timer refreshes any connection not refreshed for this long
	// (REFRESH_MAX_AGE), keeping refresh tokens inside Microsoft's 90-day
	// inactivity window and finding dead ones early.
	MaxAge time.Duration
	// Lookahead: the timer pre-refreshes tokens expiring within this
	// (REFRESH_LOOKAHEAD) for connections active within ActiveWindow.
	Lookahead    time.Duration
	ActiveWindow time.Duration
}

// DefaultPolicy holds the contract's defaults.
func DefaultPolicy() Policy {
	return Policy{Margin: 5 * time.Minute, MaxAge: 24 * time.Hour, Lookahead: 10 * time.Minute, ActiveWindow: time.Hour}
}

// NeedsRefresh: the token API must refresh before answering.
func (p Policy) NeedsRefresh(c Connection, now time.Time) bool {
	return !c.AccessTokenExpiresAt.After(now.Add(p.Margin))
}

// DueForSweep: the timer should refresh c now. Never for a connection that
// needs the user to reconnect.
func (p Policy) DueForSweep(c Connection, now time.Time) bool {
	if c.Status != StatusConnected {
		return false
	}
	last := c.LastRefreshedAt
	if last.IsZero() {
		last = c.ConnectedAt
	}
	if !last.After(now.Add(-p.MaxAge)) {
		return true
	}
	active := c.ConnectedAt.After(now.Add(-p.ActiveWindow)) || c.LastUsedAt.After(now.Add(-p.ActiveWindow))
	return active && !c.AccessTokenExpiresAt.After(now.Add(p.Lookahead))
}
