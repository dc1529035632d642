package httpapi

import (
	"context"
	"net/http"

	"github.com/megdocs/msconnector/handler/internal/diagnostics"
)

// Diagnoser computes (or returns the cached) diagnostics report.
type Diagnoser interface {
	Report(ctx context.Context) diagnostics.Report
}

// diagnostics is GET /api/diagnostics: 200 with the report, also when a
// check fails (the report says which and what to fix).
func (s *Server) diagnostics(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Diagnostics.Report(r.Context()))
}
