package main

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/megdocs/msconnector/handler/internal/devstack"
)

// VerifyFile is what devrun leaves for `make verify` (handler/cmd/verify
// reads the same two fields): this run's connector URL and CMS key. The
// file is readable by the owner only and removed when devrun stops.
type VerifyFile struct {
	BaseURL   string `json:"base_url"`
	CMSAPIKey string `json:"cms_api_key"`
}

func writeVerifyFile(path string, s *devstack.Stack) (func(), error) {
	b, err := json.Marshal(VerifyFile{BaseURL: s.HandlerURL, CMSAPIKey: s.CMSKey})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(path) }, nil
}
