package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// TestRespondMapsEveryCode: each of the contract's codes gets the contract's
// status and the error's own message; a code the table does not know, or an
// error without one, is 500 internal_error with no detail.
func TestRespondMapsEveryCode(t *testing.T) {
	for _, tt := range []struct {
		err       error
		status    int
		code, msg string
	}{
		{connection.Errorf(connection.EInvalid, "m1"), 400, "invalid_request", "m1"},
		{connection.Errorf(connection.EReturnURLNotAllowed, "m2"), 400, "return_url_not_allowed", "m2"},
		{connection.Errorf(connection.EConnectCodeInvalid, "m3"), 400, "invalid_connect_code", "m3"},
		{connection.Errorf(connection.EUnauthorized, "m4"), 401, "unauthorized", "m4"},
		{fmt.Errorf("store: %w", connection.ErrNotFound), 404, "not_connected", connection.ErrNotFound.Message},
		{connection.Errorf(connection.ENotFound, "m5"), 404, "not_found", "m5"},
		{connection.Errorf(connection.EMethodNotAllowed, "m6"), 405, "method_not_allowed", "m6"},
		{connection.Errorf(connection.EUserMismatch, "m7"), 409, "user_mismatch", "m7"},
		{connection.ErrReconnectRequired, 409, "reconnect_required", connection.ErrReconnectRequired.Message},
		{connection.Errorf(connection.EUnavailable, "m8"), 503, "temporarily_unavailable", "m8"},
		{connection.Errorf(connection.ENotConfigured, "m9"), 503, "not_configured", "m9"},
		{fmt.Errorf("x: %w", connection.ErrBadCursor), 400, "invalid_request", connection.ErrBadCursor.Message},
		{fmt.Errorf("x: %w", connection.ErrConflict), 500, "internal_error", "internal error"},
		{errors.New("dial tcp 10.0.0.1: secret detail"), 500, "internal_error", "internal error"},
	} {
		rec := httptest.NewRecorder()
		respond(rec, tt.err)
		var body errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("respond(%v): body %q: %v", tt.err, rec.Body, err)
		}
		if rec.Code != tt.status || body.Error != tt.code || body.Message != tt.msg {
			t.Errorf("respond(%v) = %d %+v, want %d {%s %s}", tt.err, rec.Code, body, tt.status, tt.code, tt.msg)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("respond(%v): Content-Type %q", tt.err, ct)
		}
	}
}

// TestRespondRetryAfter: an error asking for a pause gets Retry-After in
// whole seconds, rounded up; others get none.
func TestRespondRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		after time.Duration
		want  string
	}{{0, ""}, {1500 * time.Millisecond, "2"}, {time.Minute, "60"}} {
		rec := httptest.NewRecorder()
		respond(rec, fmt.Errorf("tokens: %w", &connection.Error{Code: connection.EUnavailable, Message: "m", RetryAfter: tt.after}))
		if got := rec.Header().Get("Retry-After"); got != tt.want {
			t.Errorf("RetryAfter %s: Retry-After = %q, want %q", tt.after, got, tt.want)
		}
	}
}

// TestWriteErrorLogsWhatTheResponseMustNotSay: an internal error's detail
// and a run-time not_configured's cause go to the log, never the response;
// a bare not_configured (a missing setting, logged at start-up) is not
// logged again on every request.
func TestWriteErrorLogsWhatTheResponseMustNotSay(t *testing.T) {
	const detail = "secret-detail-7f3a"
	for _, tt := range []struct {
		name  string
		err   error
		event string
	}{
		{"internal", errors.New(detail), "internal_error"},
		{"not configured with a cause", &connection.Error{Code: connection.ENotConfigured, Message: "m", Err: errors.New(detail)}, "not_configured"},
		{"wrapped not configured", fmt.Errorf("keys: %s: %w", detail, connection.Errorf(connection.ENotConfigured, "m")), "not_configured"},
		{"bare not configured", connection.Errorf(connection.ENotConfigured, "m"), ""},
		{"client error", connection.Errorf(connection.EInvalid, "m"), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var log strings.Builder
			s := &Server{Log: zerolog.New(&log)}
			rec := httptest.NewRecorder()
			s.writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), tt.err)
			if strings.Contains(rec.Body.String(), detail) {
				t.Errorf("response %q shows the detail", rec.Body)
			}
			switch {
			case tt.event == "" && log.Len() > 0:
				t.Errorf("logged %s, want nothing", log.String())
			case tt.event != "" && (!strings.Contains(log.String(), `"event":"`+tt.event+`"`) || !strings.Contains(log.String(), detail)):
				t.Errorf("logged %q, want event %s with the detail", log.String(), tt.event)
			}
		})
	}
}

// TestStatusesLiveInErrorsGo: no other file of the package names an error
// status; every 4xx and 5xx comes from statusOf through respond. Nor does
// any file branch on another package's error values or types: their codes
// say what they mean.
func TestStatusesLiveInErrorsGo(t *testing.T) {
	allowed := map[string]bool{"StatusOK": true, "StatusCreated": true, "StatusNoContent": true, "StatusFound": true}
	others := map[string]bool{"connectflow": true, "tokens": true, "secrets": true, "diagnostics": true, "config": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if name == "errors.go" || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			switch {
			case !ok:
			case pkg.Name == "http" && strings.HasPrefix(sel.Sel.Name, "Status") && !allowed[sel.Sel.Name]:
				t.Errorf("%s: http.%s outside errors.go: map a code in statusOf instead", fset.Position(sel.Pos()), sel.Sel.Name)
			case others[pkg.Name] && (strings.HasPrefix(sel.Sel.Name, "Err") || strings.HasSuffix(sel.Sel.Name, "Error")):
				t.Errorf("%s: %s.%s: httpapi branches on error codes (connection.ErrorCode), not on other packages' errors", fset.Position(sel.Pos()), pkg.Name, sel.Sel.Name)
			}
			return true
		})
	}
}
