package app_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/clocktest"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/devstack"
)

// loopDetected is Microsoft's AADSTS50196 answer to a refresh.
func loopDetected() devidp.Response {
	return devidp.OAuthError(400, "invalid_grant", 50196, "The server terminated an operation because it encountered a client request loop. Please contact your app vendor.")
}

// TestA429PausesRefreshesButAPersonStillConnects is issue 12's proof: a
// 429 on one user's refresh pauses this instance's refreshes (token API
// and timer), and a person who signs in meanwhile is connected: the code
// exchange is never held back.
func TestA429PausesRefreshesButAPersonStillConnects(t *testing.T) {
	// Stored tokens expire at once on the handler's and the stand-in's
	// settable clock.
	clock := clocktest.New(time.Now())
	s := startStack(t, devstack.Options{IdentityExpiresIn: time.Second, Now: clock.Now})
	s.connect(t, "throttle-a", "ada@contoso.com")
	clock.Advance(1100 * time.Millisecond)

	s.IDP.FailNext(1, devidp.Throttled(30*time.Second))
	r := s.token(t, "throttle-a")
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "temporarily_unavailable" || r.header.Get("Retry-After") != "30" {
		t.Fatalf("token API on a 429: %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 30", r.status, r.body, r.header.Get("Retry-After"))
	}
	ev := s.logs.Events("throttled")
	if len(ev) != 1 || ev[0]["retry_after_s"] != 30.0 || ev[0]["user_id"] != nil {
		t.Fatalf("throttled lines = %v, want one with retry_after_s 30 and no user_id (it concerns the instance)", ev)
	}

	// Within the pause, B signs in: the exchange is attempted and works.
	exchanges := s.IDP.TokenRequests("authorization_code")
	s.connect(t, "throttle-b", "grace@contoso.com")
	if got := s.IDP.TokenRequests("authorization_code") - exchanges; got != 1 {
		t.Errorf("code exchanges during the pause = %d, want 1", got)
	}
	if st := s.cms(t, http.MethodGet, "/api/connections/throttle-b", nil); st.status != http.StatusOK || st.json(t)["status"] != "connected" {
		t.Errorf("B after connecting during the pause: %d %s", st.status, st.body)
	}

	// Refreshes stay paused: neither the token API nor the timer calls
	// Microsoft.
	refreshes := s.IDP.TokenRequests("refresh_token")
	clock.Advance(1100 * time.Millisecond) // B's token expires too
	for _, u := range []string{"throttle-a", "throttle-b"} {
		if r := s.token(t, u); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("token API for %s during the pause: %d %s", u, r.status, r.body)
		}
	}
	rv, _ := s.timer(t)
	if rv["due"] != 2.0 || rv["skipped"] != 2.0 || rv["refreshed"] != 0.0 || rv["transient_failures"] != 0.0 {
		t.Errorf("sweep during the pause = %v, want 2 due, 2 skipped", rv)
	}
	if got := s.IDP.TokenRequests("refresh_token") - refreshes; got != 0 {
		t.Errorf("%d refresh requests during the pause, want 0", got)
	}
}

// TestLoopDetectionPausesOnlyThatConnection: AADSTS50196 on A pauses A
// (in its row, so every instance and the sweep see it); C's due token
// still refreshes. While paused, A's token API answers with the stored
// token if it is still valid, else 503 with Retry-After.
func TestLoopDetectionPausesOnlyThatConnection(t *testing.T) {
	// A's token is inside the refresh margin and still valid, on the
	// handler's and the stand-in's settable clock.
	clock := clocktest.New(time.Now())
	s := startStack(t, devstack.Options{IdentityExpiresIn: 2 * time.Minute, Now: clock.Now})
	s.connect(t, "loop-a", "ada@contoso.com")
	s.IDP.SetExpiresIn(time.Second) // C and D get tokens that expire at once
	s.connect(t, "loop-c", "grace@contoso.com")
	s.connect(t, "loop-d", "ada@contoso.com")
	clock.Advance(1100 * time.Millisecond)
	stored := s.stored(t, "loop-a").AccessToken

	// A meets 50196: it answers with its still-valid stored token.
	s.IDP.FailNext(1, loopDetected())
	r := s.token(t, "loop-a")
	if r.status != http.StatusOK || r.json(t)["access_token"] != stored {
		t.Fatalf("token API for A on 50196: %d %s, want 200 with the stored token", r.status, r.body)
	}
	if until := s.stored(t, "loop-a").ThrottledUntil; until.Before(clock.Now().Add(50*time.Second)) || until.After(clock.Now().Add(61*time.Second)) {
		t.Errorf("A's row: ThrottledUntil = %v, want about a minute from now", until)
	}
	ev := s.logs.Events("throttled")
	if len(ev) != 1 || ev[0]["user_id"] != "loop-a" || ev[0]["retry_after_s"] != 60.0 {
		t.Fatalf("throttled lines = %v, want one with user_id loop-a and retry_after_s 60", ev)
	}

	// C's due token still refreshes.
	refreshes := s.IDP.TokenRequests("refresh_token")
	r = s.token(t, "loop-c")
	if r.status != http.StatusOK || s.IDP.TokenRequests("refresh_token")-refreshes != 1 {
		t.Fatalf("token API for C during A's pause: %d %s, %d refreshes", r.status, r.body, s.IDP.TokenRequests("refresh_token")-refreshes)
	}
	// A stays paused: the stored token again, without a call to Microsoft.
	refreshes = s.IDP.TokenRequests("refresh_token")
	if r := s.token(t, "loop-a"); r.status != http.StatusOK || r.json(t)["access_token"] != stored {
		t.Errorf("token API for A during its pause: %d %s", r.status, r.body)
	}
	if got := s.IDP.TokenRequests("refresh_token") - refreshes; got != 0 {
		t.Errorf("%d refresh requests for a paused connection, want 0", got)
	}

	// D meets 50196 with its token expired: 503 with Retry-After, on the
	// call that met it and during the pause.
	s.IDP.FailNext(1, loopDetected())
	for i := range 2 {
		r := s.token(t, "loop-d")
		if r.status != http.StatusServiceUnavailable || r.errorCode(t) != "temporarily_unavailable" {
			t.Fatalf("token API for D (%d): %d %s, want 503 temporarily_unavailable", i, r.status, r.body)
		}
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Errorf("Retry-After = %q, want 1-60", r.header.Get("Retry-After"))
		}
	}
	if st := s.cms(t, http.MethodGet, "/api/connections/loop-d", nil).json(t); st["status"] != "connected" {
		t.Errorf("D after 50196: %v, want still connected", st["status"])
	}

	// The sweep skips both paused connections and refreshes C.
	refreshes = s.IDP.TokenRequests("refresh_token")
	rv, _ := s.timer(t)
	if rv["due"] != 3.0 || rv["skipped"] != 2.0 || rv["refreshed"] != 1.0 || rv["transient_failures"] != 0.0 {
		t.Errorf("sweep = %v, want 3 due, 2 skipped, 1 refreshed", rv)
	}
	if got := s.IDP.TokenRequests("refresh_token") - refreshes; got != 1 {
		t.Errorf("sweep sent %d refreshes, want 1 (C)", got)
	}

	// Connecting again replaces the paused grant: the new one is not paused.
	s.connect(t, "loop-d", "ada@contoso.com")
	if until := s.stored(t, "loop-d").ThrottledUntil; !until.IsZero() {
		t.Errorf("D connected again but is still paused until %v", until)
	}
}
