package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/config"
	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/events"
	"github.com/megdocs/msconnector/handler/internal/funchost"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

// microsoft builds the identity client with the configured client
// authentication: the client secret from the secrets source, or a
// managed-identity assertion (no secret anywhere).
func microsoft(cfg config.Config, d Deps, src secrets.Source) (*msidentity.Client, error) {
	var cred msidentity.ClientCredential
	switch cfg.ClientAuth {
	case config.ClientAuthManagedIdentity:
		if d.Credential != nil {
			cred = msidentity.NewAssertionCredential(d.Credential, d.Now)
		} else {
			c, err := msidentity.NewManagedIdentityCredential(cfg.AzureClientID, d.HTTPClient, d.Now)
			if err != nil {
				return nil, err
			}
			cred = c
		}
	default:
		cred = msidentity.NewSecretCredential(msidentity.SecretFunc(func(ctx context.Context, name string, reload bool) (string, error) {
			read := src.Get
			if reload {
				read = src.Reload
			}
			s, err := read(ctx, name)
			return s.Value, err
		}))
	}
	return msidentity.New(msidentity.Config{
		AuthorityHost: cfg.AuthorityHost, Tenant: cfg.Tenant, ClientID: cfg.ClientID,
		RedirectURL: cfg.CallbackURL, GraphURL: cfg.GraphURL, Scopes: cfg.Scopes,
		HTTPClient: d.HTTPClient, Now: d.Now, Credential: cred, Logger: d.Log,
	})
}

// webhook wires both sides of the webhook on the host's storage account:
// the publisher that enqueues each event, and the queue-triggered function
// (POST /webhook, binding "message" in functions/webhook/function.json)
// that delivers one attempt per message.
func webhook(cfg config.Config, d Deps, src secrets.Source, lazyCred func() (azcore.TokenCredential, error), outbox events.Outbox) (*events.Enqueuer, http.Handler, error) {
	o := storagequeue.Options{ConnectionString: cfg.QueueConnectionString, ServiceURL: cfg.QueueServiceURL, HTTPClient: d.HTTPClient}
	if o.ConnectionString == "" {
		c, err := lazyCred() // the same managed identity as the tables
		if err != nil {
			return nil, nil, err
		}
		o.Credential = c
	}
	qs, err := storagequeue.New(o)
	if err != nil {
		return nil, nil, err
	}
	queue := qs.Queue(cfg.WebhookQueue)
	deliverer := &events.Deliverer{
		URL: cfg.WebhookURL, HTTPClient: d.HTTPClient, Now: d.Now, Log: d.Log,
		Queue: queue, Poison: qs.Queue(cfg.WebhookQueue + storagequeue.PoisonSuffix),
		Secret: func(ctx context.Context) (string, error) {
			s, err := src.Get(ctx, secrets.WebhookSecret)
			return s.Value, err
		},
	}
	h := funchost.QueueHandler("message", deliver(deliverer, cfg.Host.MaxDequeueCount))
	return &events.Enqueuer{Queue: queue, Outbox: outbox, Log: d.Log, Now: d.Now}, h, nil
}

// deliver is the webhook function: one attempt per message. When the
// attempt's next step cannot be stored, the invocation fails and the host
// shows the message again; on its last allowed receive (host.json's
// maxDequeueCount) the host moves it to "<queue>-poison" by itself, so say
// so now with webhook_dropped: the alert on lost events must not miss it.
func deliver(d *events.Deliverer, maxDequeue int64) funchost.QueueFunc {
	return func(ctx context.Context, _ funchost.Invocation, m funchost.QueueMessage) ([]string, error) {
		out, err := d.Deliver(ctx, m.Body)
		if err != nil {
			if maxDequeue > 0 && m.DequeueCount >= maxDequeue {
				zerolog.Ctx(ctx).Error().Str("event", "webhook_dropped").Str("reason", "host_poison").
					Int64("dequeue_count", m.DequeueCount).Err(err).
					Msg("webhook_dropped: the host moves this message to the poison queue (docs/operations.md: replay)")
			}
			return nil, err
		}
		return []string{"webhook delivery: " + out.String()}, nil
	}
}

// housekeeping is the sweep's hook: the outbox's recovery first (events
// whose enqueue did not happen: a crash or a queue outage after their
// change was stored; nil without a webhook), then the secret reminders.
// Each runs whatever the other did.
func housekeeping(remind func(context.Context) error, recoverOutbox func(context.Context) (int, error), log zerolog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		var errs []error
		if recoverOutbox != nil {
			if n, err := recoverOutbox(ctx); err != nil {
				errs = append(errs, err)
			} else if n > 0 {
				log.Info().Str("event", "outbox_recovered").Int("count", n).Msg("webhook deliveries sent from the outbox")
			}
		}
		errs = append(errs, remind(ctx))
		return errors.Join(errs...)
	}
}

// expiryReminder logs secret_expiring once a day per secret version from 30
// days before its Key Vault expiry. "Once" holds across instances and
// restarts: the first sweep of the day wins a conditional insert in the
// connectsessions table.
func expiryReminder(src secrets.Source, pending connection.PendingStore, log zerolog.Logger, now func() time.Time) func(context.Context) error {
	return func(ctx context.Context) error {
		t := now().UTC()
		day := t.Format("2006-01-02")
		for _, e := range secrets.CheckExpiry(ctx, src, secrets.Names(), t, secrets.ExpiryWarning) {
			sum := sha256.Sum256([]byte("secret_expiring|" + e.Name + "|" + e.Version + "|" + day))
			err := pending.PutPending(ctx, connection.Pending{
				Kind: connection.PendingNotice, ID: hex.EncodeToString(sum[:]),
				// Not a user: the notice's subject, for an admin reading the
				// table, in the characters every user_id column allows.
				UserID:    "notice@" + e.Name,
				CreatedAt: t, ExpiresAt: t.Add(48 * time.Hour),
			})
			if errors.Is(err, connection.ErrConflict) {
				continue // already said today
			}
			ev := log.Warn()
			if err != nil {
				// Better twice than never: say it, and say why it may repeat.
				ev = ev.AnErr("marker_error", err)
			}
			ev.Str("event", "secret_expiring").EmbedObject(e).
				Msg(fmt.Sprintf("Key Vault secret %s expires on %s: rotate it (docs/operations.md)", e.Name, e.Expires.UTC().Format("2006-01-02")))
		}
		return nil
	}
}
