package httpapi_test

import (
	"strings"
	"testing"

	"github.com/megdocs/msconnector/handler/internal/httpapi"
)

// The Server does not fall back to a clock of its own: building its
// routes without Now is a programming error, caught at once.
func TestNowIsRequired(t *testing.T) {
	defer func() {
		if r, _ := recover().(string); !strings.Contains(r, "Server.Now is required") {
			t.Errorf("Handler without Now: recover() = %q, want a panic naming Server.Now", r)
		}
	}()
	(&httpapi.Server{}).Handler()
}
