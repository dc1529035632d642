package app_test

import (
	"net/http"
	"sync"
	"testing"
)

// Contract v2's completion through the real stack (handler, Azurite,
// devidp): only the CMS user a connect was started for can finish it.

// TestCompleteRace: many concurrent completions with one connect code,
// exactly one 200; the others 400 invalid_connect_code.
func TestCompleteRace(t *testing.T) {
	s := start(t, nil)
	code := connectCode(t, s.signIn(t, "racer", "ada@contoso.com"))
	const n = 12
	statuses := make([]int, n)
	codes := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := s.complete(t, "racer", code)
			statuses[i] = r.status
			if r.status != http.StatusOK {
				codes[i] = r.errorCode(t)
			}
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, st := range statuses {
		switch {
		case st == http.StatusOK:
			won++
		case st != http.StatusBadRequest || codes[i] != "invalid_connect_code":
			t.Errorf("losing completion: %d %s", st, codes[i])
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent completions succeeded, want exactly 1", won, n)
	}
	if got := len(s.logs.Events("connected")); got != 1 {
		t.Errorf("%d connected log lines, want 1", got)
	}
	if r := s.cms(t, http.MethodGet, "/api/connections/racer", nil); r.status != http.StatusOK {
		t.Errorf("status after the race: %d %s", r.status, r.body)
	}
}

// TestMismatchDestroysTheResult, in both directions: M's connect link
// opened by V (V signs in with V's Microsoft account; V's browser comes
// back to the CMS inside V's session, which completes as V), and V's link
// opened by M. The completion by the wrong user is 409 user_mismatch, the
// code is spent and the signed-in result destroyed: the right user's
// completion with the same code is then 400, and nothing is stored for
// either user.
func TestMismatchDestroysTheResult(t *testing.T) {
	s := start(t, nil)
	for _, tc := range []struct {
		name, startedFor, openedBy, account string
	}{
		{"M's link opened by V", "m", "v", "grace@contoso.com"},
		{"V's link opened by M", "v", "m", "ada@contoso.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code := connectCode(t, s.signIn(t, tc.startedFor, tc.account))
			r := s.complete(t, tc.openedBy, code)
			if r.status != http.StatusConflict || r.errorCode(t) != "user_mismatch" {
				t.Fatalf("completion by %s: %d %s, want 409 user_mismatch", tc.openedBy, r.status, r.body)
			}
			if r := s.complete(t, tc.startedFor, code); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_connect_code" {
				t.Errorf("completion by %s after the mismatch: %d %s, want 400 invalid_connect_code", tc.startedFor, r.status, r.body)
			}
			for _, u := range []string{"m", "v"} {
				if r := s.cms(t, http.MethodGet, "/api/connections/"+u, nil); r.status != http.StatusNotFound {
					t.Errorf("%s after the mismatch: %d %s, want 404", u, r.status, r.body)
				}
			}
			found := false
			for _, l := range s.logs.Events("oauth_failed") {
				if l["reason"] == "user_mismatch" && l["user_id"] == tc.openedBy && l["started_by"] == tc.startedFor {
					found = true
				}
			}
			if !found {
				t.Errorf("no oauth_failed line with reason user_mismatch, user_id %s, started_by %s", tc.openedBy, tc.startedFor)
			}
		})
	}
	if got := len(s.logs.Events("connected")); got != 0 {
		t.Errorf("%d connected log lines after mismatches, want 0", got)
	}
	if n := countEntities(t, s, "connections"); n != 0 {
		t.Errorf("%d connection entities, want 0", n)
	}
}

// TestCraftedReturnLinkStillConnects pins what completion cannot close
// (docs/security.md): an attacker who holds V's leaked connect link signs
// in with the attacker's own Microsoft account and, instead of completing,
// sends the return link (return_url with connect_code) to V. If V opens it
// within 10 minutes while logged in to the CMS, the CMS completes as V,
// the user the connect was started for, and V's connection is the
// attacker's Microsoft account. Nothing in the request tells the two
// apart; what limits it is that both links must reach the same victim
// within the code's 10 minutes, and the account the CMS shows after
// completing. If this test starts failing, the hole was closed: update
// docs/security.md.
func TestCraftedReturnLinkStillConnects(t *testing.T) {
	s := start(t, nil)
	code := connectCode(t, s.signIn(t, "v", "grace@contoso.com")) // the attacker signs in on V's link
	r := s.complete(t, "v", code)                                 // V opens the crafted return link
	if r.status != http.StatusOK {
		t.Fatalf("completion by the starter: %d %s", r.status, r.body)
	}
	acct, _ := r.json(t)["account"].(map[string]any)
	if acct["email"] != "grace@contoso.com" {
		t.Errorf("account %v: the completion shows whose Microsoft account was connected", acct)
	}
}
