package connection

import (
	"strings"
	"time"
)

// SweepRecord is what the last finished sweep leaves for GET
// /api/diagnostics: when it ran, what it did, and the connections it
// listed, counted by status and by missing scope. It is stored once per app
// (Table Storage), so every instance, and one restarted since, reports the
// same last sweep without scanning the connections itself.
type SweepRecord struct {
	StartedAt  time.Time
	FinishedAt time.Time
	DurationMS int64

	Due, Refreshed, ReconnectRequired, TransientFailures, Skipped int64
	// StoppedBy is why the sweep stopped early ("" when it listed every
	// connection): the counts below then cover only what it listed.
	StoppedBy string

	// Connections counts every connection listed, by status.
	Connections map[Status]int64
	// MissingScope counts the connections that lack at least one of the
	// configured scopes (MICROSOFT_SCOPES): the setup guide's
	// "Insufficient permissions".
	MissingScope int64
}

// MissingScopes returns the scopes of required that a stored connection's
// granted scopes lack, comparing as Microsoft does (case-insensitive) and
// after the normalisation stored scopes get (Graph's short names). A stored
// connection always holds a refresh token, which is what offline_access
// grants (Microsoft never lists it), so offline_access is never missing.
func MissingScopes(granted, required []string) []string {
	have := make(map[string]bool, len(granted))
	for _, s := range NormalizeScopes(granted, true) {
		have[strings.ToLower(s)] = true
	}
	var out []string
	for _, s := range NormalizeScopes(required, false) {
		if !have[strings.ToLower(s)] {
			out = append(out, s)
		}
	}
	return out
}
