package connection_test

import (
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

var policyNow = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// ago and in are offsets from policyNow.
func ago(d time.Duration) time.Time { return policyNow.Add(-d) }
func in(d time.Duration) time.Time  { return policyNow.Add(d) }

func TestDefaultPolicyIsTheContractsDefaults(t *testing.T) {
	want := connection.Policy{Margin: 5 * time.Minute, MaxAge: 24 * time.Hour, Lookahead: 10 * time.Minute, ActiveWindow: time.Hour}
	if got := connection.DefaultPolicy(); got != want {
		t.Errorf("DefaultPolicy() = %+v, want REFRESH_MARGIN 5m, REFRESH_MAX_AGE 24h, REFRESH_LOOKAHEAD 10m, active = the last hour: %+v", got, want)
	}
}

// NeedsRefresh: the token API refreshes when the access token expires
// within REFRESH_MARGIN (the boundary included), and never otherwise.
func TestNeedsRefresh(t *testing.T) {
	p := connection.DefaultPolicy()
	for _, tc := range []struct {
		name    string
		p       connection.Policy
		expires time.Time
		want    bool
	}{
		{"expired", p, ago(time.Minute), true},
		{"expires now", p, policyNow, true},
		{"expires within the margin", p, in(4 * time.Minute), true},
		{"expires exactly at the margin", p, in(5 * time.Minute), true},
		{"expires just after the margin", p, in(5*time.Minute + time.Second), false},
		{"fresh", p, in(time.Hour), false},
		{"a wider margin (REFRESH_MARGIN=20m)", connection.Policy{Margin: 20 * time.Minute}, in(15 * time.Minute), true},
		{"a zero margin refreshes only the expired", connection.Policy{}, in(time.Second), false},
		{"never had a token", p, time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connection.Connection{Status: connection.StatusConnected, AccessTokenExpiresAt: tc.expires}
			if got := tc.p.NeedsRefresh(c, policyNow); got != tc.want {
				t.Errorf("NeedsRefresh(expires %v from now) = %v, want %v", tc.expires.Sub(policyNow), got, tc.want)
			}
		})
	}
}

// DueForSweep: the timer refreshes a connected connection not refreshed for
// REFRESH_MAX_AGE, and pre-refreshes one whose token expires within
// REFRESH_LOOKAHEAD when it was connected or given a token in the last
// hour (contract v2, REFRESH_LOOKAHEAD); never one that must reconnect.
func TestDueForSweep(t *testing.T) {
	p := connection.DefaultPolicy()
	// idle: connected and used long ago, refreshed recently, so neither
	// MaxAge nor activity applies unless a case changes it.
	idle := connection.Connection{
		Status:               connection.StatusConnected,
		ConnectedAt:          ago(30 * 24 * time.Hour),
		LastUsedAt:           ago(3 * time.Hour),
		LastRefreshedAt:      ago(time.Hour),
		AccessTokenExpiresAt: in(5 * time.Minute),
	}
	for _, tc := range []struct {
		name string
		p    connection.Policy
		edit func(c *connection.Connection)
		want bool
	}{
		{"idle, refreshed an hour ago, token expiring soon: not due", p, func(*connection.Connection) {}, false},

		// REFRESH_MAX_AGE
		{"refreshed 25h ago", p, func(c *connection.Connection) { c.LastRefreshedAt = ago(25 * time.Hour) }, true},
		{"refreshed exactly REFRESH_MAX_AGE ago", p, func(c *connection.Connection) { c.LastRefreshedAt = ago(24 * time.Hour) }, true},
		{"refreshed just inside REFRESH_MAX_AGE", p, func(c *connection.Connection) { c.LastRefreshedAt = ago(24*time.Hour - time.Second) }, false},
		{"never refreshed, connected 25h ago: the connection time counts", p, func(c *connection.Connection) {
			c.LastRefreshedAt, c.ConnectedAt = time.Time{}, ago(25*time.Hour)
		}, true},
		{"never refreshed, connected 23h ago, idle", p, func(c *connection.Connection) {
			c.LastRefreshedAt, c.ConnectedAt, c.AccessTokenExpiresAt = time.Time{}, ago(23*time.Hour), in(time.Hour)
		}, false},
		{"a shorter REFRESH_MAX_AGE (1h)", connection.Policy{MaxAge: time.Hour, Lookahead: 10 * time.Minute, ActiveWindow: time.Hour}, func(c *connection.Connection) {
			c.LastRefreshedAt = ago(61 * time.Minute)
		}, true},

		// REFRESH_LOOKAHEAD, connected in the last hour
		{"connected 30 min ago, token expires within the lookahead", p, func(c *connection.Connection) {
			c.ConnectedAt, c.AccessTokenExpiresAt = ago(30*time.Minute), in(9*time.Minute)
		}, true},
		{"connected 30 min ago, token expires exactly at the lookahead", p, func(c *connection.Connection) {
			c.ConnectedAt, c.AccessTokenExpiresAt = ago(30*time.Minute), in(10*time.Minute)
		}, true},
		{"connected 30 min ago, token expires after the lookahead", p, func(c *connection.Connection) {
			c.ConnectedAt, c.AccessTokenExpiresAt = ago(30*time.Minute), in(11*time.Minute)
		}, false},
		{"connected 30 min ago, token already expired", p, func(c *connection.Connection) {
			c.ConnectedAt, c.AccessTokenExpiresAt = ago(30*time.Minute), ago(time.Minute)
		}, true},
		{"connected exactly an hour ago: no longer active", p, func(c *connection.Connection) {
			c.ConnectedAt = ago(time.Hour)
		}, false},

		// REFRESH_LOOKAHEAD, given a token in the last hour
		{"given a token 10 min ago, token expires within the lookahead", p, func(c *connection.Connection) {
			c.LastUsedAt = ago(10 * time.Minute)
		}, true},
		{"given a token 59 min ago", p, func(c *connection.Connection) { c.LastUsedAt = ago(59 * time.Minute) }, true},
		{"given a token exactly an hour ago: no longer active", p, func(c *connection.Connection) { c.LastUsedAt = ago(time.Hour) }, false},
		{"given a token 10 min ago, token expires after the lookahead", p, func(c *connection.Connection) {
			c.LastUsedAt, c.AccessTokenExpiresAt = ago(10*time.Minute), in(11*time.Minute)
		}, false},
		{"a longer REFRESH_LOOKAHEAD (30m)", connection.Policy{MaxAge: 24 * time.Hour, Lookahead: 30 * time.Minute, ActiveWindow: time.Hour}, func(c *connection.Connection) {
			c.LastUsedAt, c.AccessTokenExpiresAt = ago(10*time.Minute), in(25*time.Minute)
		}, true},

		// Never a connection that must reconnect.
		{"reconnect_required, refreshed 25h ago", p, func(c *connection.Connection) {
			c.Status, c.LastRefreshedAt = connection.StatusReconnectRequired, ago(25*time.Hour)
		}, false},
		{"reconnect_required, active, token expiring", p, func(c *connection.Connection) {
			c.Status, c.LastUsedAt = connection.StatusReconnectRequired, ago(time.Minute)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := idle
			tc.edit(&c)
			if got := tc.p.DueForSweep(c, policyNow); got != tc.want {
				t.Errorf("DueForSweep(%v, connected %v ago, used %v ago, refreshed %v ago, expires in %v) = %v, want %v",
					c.Status, policyNow.Sub(c.ConnectedAt), policyNow.Sub(c.LastUsedAt), policyNow.Sub(c.LastRefreshedAt),
					c.AccessTokenExpiresAt.Sub(policyNow), got, tc.want)
			}
		})
	}
}
