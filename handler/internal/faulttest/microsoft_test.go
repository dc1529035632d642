package faulttest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Faults at Microsoft's token endpoint while the CMS asks for a token whose
// access token has expired (so it must be refreshed). Every fault must give
// the contract's answer, leave the connection connected, keep a refresh
// token Microsoft accepts (the newest, unless the fault swallowed an
// answer Microsoft had already sent), and the next call must work.
func TestTokenEndpointFaults(t *testing.T) {
	t.Parallel()
	const clientTimeout = 3 * time.Second
	var read atomic.Int64
	stripRefreshToken := func(status int, body []byte) []byte {
		var m map[string]any
		if status != http.StatusOK || json.Unmarshal(body, &m) != nil {
			t.Errorf("the stand-in answered %d %s", status, body)
			return body
		}
		delete(m, "refresh_token")
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name  string
		fault Fault
		// The token API's answer: status and error code ("" for 200).
		status     int
		code       string
		retryAfter string // exact Retry-After, "" for any
		kept       kept
		// advance: the handler's clock moves this far before the next
		// call (past a throttling pause, or past the new access token's
		// expiry so the next call refreshes again).
		advance time.Duration
		check   func(t *testing.T, s *stack, c *conn, r response)
	}{
		{
			name: "429 with Retry-After",
			fault: Status(http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}, "Content-Type": {"application/json"}},
				msError("temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")),
			status: 503, code: "temporarily_unavailable", retryAfter: "7", kept: keptNewest, advance: 8 * time.Second,
			check: func(t *testing.T, s *stack, c *conn, _ response) {
				// The pause covers every token request of the instance:
				// another user is refused without a call to Microsoft.
				other := s.seed(t, len(s.accounts)-1, 1)[0]
				n := s.inj.Requests(Microsoft)
				wantError(t, s.token(t, other.userID), 503, "temporarily_unavailable")
				if got := s.inj.Requests(Microsoft) - n; got != 0 {
					t.Errorf("%d requests to Microsoft during the pause, want 0", got)
				}
				if len(s.logs.Events("throttled")) == 0 {
					t.Error("no throttled log line")
				}
			},
		},
		{
			name:   "500 with an HTML page",
			fault:  Status(500, http.Header{"Content-Type": {"text/html"}}, []byte("<html><body>Server Error</body></html>")),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			name:   "503 temporarily_unavailable",
			fault:  Status(503, jsonHeader, msError("temporarily_unavailable", 90006, "The service is temporarily unavailable.")),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			name:   "timeout before Microsoft answers",
			fault:  Hang(),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			// Microsoft rotated the refresh token; the answer never came.
			name:   "timeout after Microsoft issued new tokens",
			fault:  HangAfterForward(),
			status: 503, code: "temporarily_unavailable", kept: keptOlderAccepted,
		},
		{
			name:   "connection reset before the request arrives",
			fault:  Reset(),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			name:   "connection reset after Microsoft issued new tokens",
			fault:  ResetAfterForward(),
			status: 503, code: "temporarily_unavailable", kept: keptOlderAccepted,
		},
		{
			name:   "connection reset in the middle of the answer",
			fault:  Truncated(200, jsonHeader, []byte(`{"token_type":"Bearer","expires_in":3600,"access_token":"eyJ0eXAi`), 30),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			name:   "malformed JSON from a gateway",
			fault:  Status(200, jsonHeader, []byte(`{"token_type":"Bearer","expires_in":3600,"access_token":`)),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
		},
		{
			name:   "Microsoft's answer cut in half (malformed JSON after a rotation)",
			fault:  Rewrite(func(_ int, b []byte) []byte { return b[:len(b)/2] }),
			status: 503, code: "temporarily_unavailable", kept: keptOlderAccepted,
		},
		{
			name:   "10 MB body",
			fault:  Large(200, jsonHeader, 10<<20, &read),
			status: 503, code: "temporarily_unavailable", kept: keptNewest,
			check: func(t *testing.T, _ *stack, _ *conn, _ response) {
				// Bounded read: msidentity stops after 1 MiB + 1 byte.
				if n := read.Load(); n > 1<<20+1 {
					t.Errorf("the handler read %d bytes of a 10 MB answer, want at most 1 MiB + 1", n)
				}
			},
		},
		{
			// Microsoft may omit refresh_token: the old one is kept and
			// still works. (The stand-in did rotate, so the kept token is
			// an older one it still accepts.)
			name:   "answer without refresh_token",
			fault:  Rewrite(stripRefreshToken),
			status: 200, kept: keptOlderAccepted, advance: 2 * time.Hour,
			check: func(t *testing.T, s *stack, c *conn, r response) {
				got, _ := s.stored(t, c)
				if got.RefreshToken != c.seedRT {
					t.Error("the stored refresh token changed although Microsoft sent none")
				}
				if at, _ := r.json(t)["access_token"].(string); at == c.seedAT || got.AccessToken != at {
					t.Error("the new access token was not stored and returned")
				}
			},
		},
	}

	s := start(t, options{accounts: len(cases) + 1, clientTimeout: clientTimeout})
	conns := s.seed(t, 0, len(cases))
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(s.inj.Clear)
			c := conns[i]
			rule := s.inj.Add(&Rule{Dependency: Microsoft, Match: TokenEndpoint(), Times: 1, Fault: tc.fault})
			r := s.token(t, c.userID)
			if tc.status == 200 {
				wantToken(t, r)
			} else {
				wantError(t, r, tc.status, tc.code)
				ra := r.header.Get("Retry-After")
				if _, err := strconv.Atoi(ra); err != nil {
					t.Errorf("Retry-After = %q, want seconds", ra)
				}
				if tc.retryAfter != "" && ra != tc.retryAfter {
					t.Errorf("Retry-After = %q, want %q", ra, tc.retryAfter)
				}
			}
			if rule.Injected() != 1 {
				t.Fatalf("the fault was injected %d times, want 1", rule.Injected())
			}
			if st := s.status(t, c.userID); st != "connected" {
				t.Errorf("status %s after a %s, want connected", st, tc.name)
			}
			s.expectKept(t, c, tc.kept)
			if tc.check != nil {
				tc.check(t, s, c, r)
			}

			// The fault clears: the next call refreshes with the kept
			// token and stores the newest.
			s.inj.Clear()
			s.clock.Advance(tc.advance)
			before := s.idp.TokenRequests("refresh_token")
			wantToken(t, s.token(t, c.userID))
			if s.idp.TokenRequests("refresh_token") == before {
				t.Error("the call after the fault did not refresh")
			}
			s.expectKept(t, c, keptNewest)
		})
	}
}

// A sweep while Microsoft throttles: the instance pauses instead of
// hammering the token endpoint, nobody is marked reconnect_required, every
// refresh token survives, and the next sweep after the pause refreshes all.
func TestSweepWhileMicrosoftThrottles(t *testing.T) {
	t.Parallel()
	const n = 24
	s := start(t, options{accounts: n, settings: map[string]string{"REFRESH_CONCURRENCY": "4"}})
	conns := s.seed(t, 0, n)
	rule := s.inj.Add(&Rule{Dependency: Microsoft, Match: TokenEndpoint(), Fault: Status(http.StatusTooManyRequests,
		http.Header{"Retry-After": {"60"}, "Content-Type": {"application/json"}},
		msError("temporarily_unavailable", 90033, "A transient error has occurred. Please try again."))})

	sum := s.sweep(t)
	if sum.Due != n || sum.Refreshed != 0 || sum.ReconnectRequired != 0 || sum.TransientFailures+sum.Skipped != n {
		t.Errorf("throttled sweep: %s; want due=%d, none refreshed or marked, all transient or skipped", sum, n)
	}
	// At most the refreshes already in flight when the first 429 arrived
	// reach Microsoft; the rest wait out the pause.
	if got := rule.Injected(); got < 1 || got > 4 {
		t.Errorf("%d token requests reached Microsoft during the throttled sweep, want 1..4 (REFRESH_CONCURRENCY)", got)
	}
	for _, c := range conns {
		s.expectKept(t, c, keptNewest)
	}

	s.inj.Clear()
	s.clock.Advance(61 * time.Second)
	sum = s.sweep(t)
	if sum.Due != n || sum.Refreshed != n {
		t.Errorf("sweep after the pause: %s; want due=refreshed=%d", sum, n)
	}
	for _, c := range conns {
		s.expectKept(t, c, keptNewest)
	}
}
