package app

import (
	"net/http"
	"testing"
	"time"

	"github.com/megdocs/msconnector/handler/internal/config"
)

// The write timeout follows host.json's functionTimeout: the host waits for
// the timer's answer until functionTimeout + 1 minute.
func TestWriteTimeoutFollowsFunctionTimeout(t *testing.T) {
	env := func(string) string { return "" }
	tests := []struct {
		name string
		host config.Host
		want time.Duration
	}{
		{"shipped host.json", config.Host{FunctionTimeout: 10 * time.Minute}, 11 * time.Minute},
		{"Flex default", config.Host{FunctionTimeout: 30 * time.Minute}, 31 * time.Minute},
		{"unbounded: the sweep's own bound", config.Host{Unbounded: true}, 4*time.Minute + 2*time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := httpServer(config.LoadWithHost(env, tt.host), http.NotFoundHandler())
			if hs.WriteTimeout != tt.want {
				t.Errorf("WriteTimeout = %v, want %v", hs.WriteTimeout, tt.want)
			}
		})
	}
}
