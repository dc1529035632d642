package devstack

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/megdocs/msconnector/handler/internal/azurite"
	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/queuehost"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

// startQueue gives webhook deliveries a queue when there is a webhook and
// no storage for it: Azurite's Queue service, as AzureWebJobsStorage (the
// host's storage account in Azure). A test that shares one emulator passes
// AzureWebJobsStorage (and its own WEBHOOK_QUEUE) in Settings instead.
func (s *Stack) startQueue(ctx context.Context, env map[string]string) error {
	if env["CMS_WEBHOOK_URL"] == "" || env["AzureWebJobsStorage"] != "" || env["AzureWebJobsStorage__queueServiceUri"] != "" {
		return nil
	}
	em, err := azurite.Start(ctx, azurite.Options{Service: azurite.Queue})
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.queue = em
	env["AzureWebJobsStorage"] = em.ConnectionString()
	return nil
}

// startTrigger plays the Functions host's queue trigger for the webhook
// function (functions/webhook/function.json), with host.json's settings,
// so deliveries arrive as they do in Azure.
func (s *Stack) startTrigger(env map[string]string, logs io.Writer) error {
	cs := env["AzureWebJobsStorage"]
	if env["CMS_WEBHOOK_URL"] == "" || cs == "" {
		return nil
	}
	settings := queuehost.Defaults()
	if path, ok := findHostJSON(); ok {
		var err error
		if settings, err = queuehost.ReadHostJSON(path); err != nil {
			return fmt.Errorf("devstack: %w", err)
		}
	}
	svc, err := storagequeue.New(storagequeue.Options{ConnectionString: cs})
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	name := config.Load(mapEnv(env)).WebhookQueue
	s.trigger = queuehost.Start(queuehost.Options{
		Queue: svc.Queue(name), Poison: svc.Queue(name + storagequeue.PoisonSuffix),
		HandlerURL: s.HandlerURL, Function: "webhook", Binding: "message",
		Settings: settings, Log: component(logs, "queue-trigger"),
	})
	return nil
}

// findHostJSON finds the repository's host.json from the working directory
// or a parent (tests run in their package's directory).
func findHostJSON() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, "host.json")
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
