package app

import (
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/diagnostics"
	"github.com/megdocs/msconnector/handler/internal/secrets"
)

// newDiagnostics builds GET /api/diagnostics' service over the secrets
// source; build adds the table store and the identity client as it makes
// them (before serving starts), so a part that could not be built shows as
// a failing check instead of hiding the others.
func newDiagnostics(cfg config.Config, d Deps, src secrets.Source) *diagnostics.Service {
	return &diagnostics.Service{
		Config: cfg, Secrets: src, SecretsFromEnv: cfg.KeyVaultURL == "",
		Now: d.Now, Log: d.Log,
	}
}
