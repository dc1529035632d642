package connection_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// TestValuesNeverPrintTokens: a Connection, a Grant or a Pending formatted
// by mistake (a %v in a log message or an error) shows whether tokens are
// set, never the tokens or the PKCE verifier.
func TestValuesNeverPrintTokens(t *testing.T) {
	const at, rt, verifier = "access-token-eyJ0eXAi", "refresh-token-0.AXoA", "pkce-verifier-dBjftJeZ4CVP"
	values := map[string]any{
		"Connection": connection.Connection{UserID: "42", Status: connection.StatusConnected, AccessToken: at, RefreshToken: rt, AccessTokenExpiresAt: time.Now()},
		"Grant":      connection.Grant{AccessToken: at, RefreshToken: rt, ExpiresAt: time.Now()},
		"Pending":    connection.Pending{Kind: connection.PendingState, ID: "id", UserID: "42", Verifier: verifier},
	}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%s", "%q", "%#v"} {
			out := fmt.Sprintf(verb, v)
			for _, secret := range []string{at, rt, verifier} {
				if strings.Contains(out, secret) {
					t.Errorf("%s formatted with %s prints a secret: %s", name, verb, out)
				}
			}
		}
	}
	if s := fmt.Sprint(values["Connection"]); !strings.Contains(s, "refresh_token:true") {
		t.Errorf("Connection prints %s: want whether a refresh token is set", s)
	}
}
