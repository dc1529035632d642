package democms

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"

	"github.com/megdocs/msconnector/handler/internal/diagnostics"
)

// diagnosticsPage is GET /diagnostics: the connector's GET /api/diagnostics
// as the same table `make verify` prints (the CMS key stays server-side).
func (h *Handler) diagnosticsPage(w http.ResponseWriter, r *http.Request) {
	code, body, err := h.call(r.Context(), http.MethodGet, "/api/diagnostics", nil)
	text := describe(code, body, err)
	var rep diagnostics.Report
	if err == nil && code == http.StatusOK && json.Unmarshal(body, &rep) == nil {
		var b bytes.Buffer
		if diagnostics.WriteTable(&b, rep) == nil {
			text = b.String()
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = diagnosticsTmpl.Execute(w, text)
}

var diagnosticsTmpl = template.Must(template.New("diagnostics").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connector diagnostics</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}pre{background:#f4f4f4;padding:1rem;overflow-x:auto}</style></head>
<body><h1>Connector diagnostics</h1>
<p>GET /api/diagnostics, as <code>make verify</code> prints it (computed at most once a minute). <a href="/">Back to the demo</a></p>
<pre id="diagnostics">{{.}}</pre></body></html>`))
