// Package clocktest is a settable clock for tests: time stands still until
// the test moves it, so TTLs, backoffs and expiries are checked without
// sleeping.
//
// Test support only: it is imported by _test.go files and the product never
// imports it. A test that runs a real server whose timeouts use wall time
// needs real time plus an offset instead (faulttest keeps such a clock).
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use. Pass its Now method
// where the code under test takes a func() time.Time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock that reads t until it is advanced.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d (a negative d moves it back).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
