package msidentity

import (
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// paused returns what remains of the instance's refresh pause.
func (c *Client) paused() time.Duration {
	c.throttleMu.Lock()
	defer c.throttleMu.Unlock()
	return c.throttleUntil.Sub(c.now())
}

// observe applies Microsoft's throttling to what it concerns (contract
// "Throttling"). A 429, on any token request, starts (or extends) this
// instance's refresh pause for its Retry-After (default 60 s) and logs
// `throttled`. AADSTS50196 concerns one user's connection: it only gets
// its Delay (default 60 s when Microsoft sent no Retry-After); the caller
// pauses that connection and logs it with the user_id, which this package
// does not know. Anything else pauses nothing.
func (c *Client) observe(e *Error) {
	scope := e.ThrottleScope()
	if scope == connection.ThrottleNone {
		return
	}
	if !e.retryAfterSent {
		e.Delay = defaultThrottlePause
	}
	if scope != connection.ThrottleInstance || e.Delay <= 0 {
		return
	}
	now := c.now()
	c.throttleMu.Lock()
	until := now.Add(e.Delay)
	if until.After(c.throttleUntil) {
		c.throttleUntil = until
	}
	c.throttleMu.Unlock()
	c.log.Warn().Str("event", "throttled").Float64("retry_after_s", e.Delay.Seconds()).EmbedObject(e).
		Msg("Microsoft throttled the app (HTTP 429); pausing this instance's refreshes (code exchanges still go through)")
}
