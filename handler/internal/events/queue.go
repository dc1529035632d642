package events

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Sender puts a message on a queue, visible after delay, and returns once
// the queue has stored it. *storagequeue.Queue implements it.
type Sender interface {
	Send(ctx context.Context, text []byte, delay time.Duration) error
}

// DefaultEnqueueTimeout bounds one enqueue (the SDK's own retries
// included): the request that caused the event waits for it.
const DefaultEnqueueTimeout = 10 * time.Second

// message is one delivery attempt's queue message. Its field names are
// chosen so that none collides with the queue trigger's own binding data
// (Id, PopReceipt, DequeueCount, InsertionTime, ExpirationTime,
// NextVisibleTime, QueueTrigger, sys), into which the host merges a JSON
// message's top-level fields. It never holds a token or the secret: the
// signature is computed at each attempt with the current secret.
type message struct {
	// DeliveryID is X-MEGDocs-Delivery: the same on every attempt.
	DeliveryID string `json:"delivery_id"`
	// Body is the exact bytes every attempt POSTs and signs, as a JSON
	// string so no decoder on the way can reformat them.
	Body string `json:"body"`
	// Attempt is the number of the attempt this message is for (1 first).
	// The host's DequeueCount cannot count them: each retry is a new
	// message.
	Attempt int `json:"attempt"`
	// FirstEnqueuedAt starts the 24-hour retry window.
	FirstEnqueuedAt time.Time `json:"first_enqueued_at"`
}

func (m message) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("events: encode message: %w", err)
	}
	return b, nil
}

// errInvalidMessage marks a queue message that is not a delivery.
var errInvalidMessage = errors.New("events: not a webhook delivery message")

func decodeMessage(b []byte) (message, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return message{}, fmt.Errorf("%w: %w", errInvalidMessage, err)
	}
	if m.DeliveryID == "" || m.Body == "" || m.Attempt < 1 || m.FirstEnqueuedAt.IsZero() {
		return message{}, fmt.Errorf("%w: a field is missing", errInvalidMessage)
	}
	return m, nil
}

// Outbox is where the Enqueuer finds and removes the entries it sends
// (connection.OutboxStore; tablestore implements it).
type Outbox interface {
	ListOutbox(ctx context.Context, before time.Time, limit int) ([]connection.OutboxEntry, error)
	DeleteOutbox(ctx context.Context, e connection.OutboxEntry) error
}

// DefaultRecoverAfter is how old an outbox entry must be before Recover
// sends it: far longer than the normal path takes (one enqueue, bounded by
// DefaultEnqueueTimeout, then one delete), so the sweep does not race a
// request that is still sending its own event. A race costs only a
// duplicate, which the CMS drops by delivery ID.
const DefaultRecoverAfter = 2 * time.Minute

// recoverPage bounds one listing of the outbox (the Table service's
// maximum page).
const recoverPage = 1000

// Enqueuer turns events into delivery messages on the webhook queue,
// through the outbox (connection.Publisher). It is the write side of the
// webhook: the queue-triggered Deliverer is the other. Safe for concurrent
// use.
type Enqueuer struct {
	Queue Sender
	// Outbox is the store the entries are written to with their change:
	// Send removes an entry once it is enqueued, Recover finds the ones
	// left behind. Required.
	Outbox Outbox
	Log    zerolog.Logger
	// Now stamps each event's CreatedAt (and At when an event has none).
	// Required: Prepare and Recover panic without it.
	Now func() time.Time
	// Rand is the source of delivery IDs (default crypto/rand.Reader).
	Rand io.Reader
	// Timeout bounds one enqueue (default DefaultEnqueueTimeout).
	Timeout time.Duration
	// RecoverAfter is the age of an entry Recover sends (default
	// DefaultRecoverAfter).
	RecoverAfter time.Duration

	randMu sync.Mutex // an injected io.Reader need not be safe for concurrent use
}

var _ connection.Publisher = (*Enqueuer)(nil)

// Prepare builds e's body once and gives it a random delivery ID: the
// outbox entry the caller stores with the change. Every enqueue of the
// entry sends these same bytes under this same ID. nil (logged as
// webhook_dropped) only for an event that cannot be encoded, a
// programming error, or when no random ID can be drawn.
func (q *Enqueuer) Prepare(e connection.Event) *connection.OutboxEntry {
	if q.Now == nil {
		panic("events: Enqueuer.Now is required")
	}
	now := q.Now().UTC()
	if e.At.IsZero() {
		e.At = now
	}
	q.randMu.Lock()
	id, err := newID(q.rand())
	q.randMu.Unlock()
	if err != nil {
		q.dropped(e, "", "event_id", err)
		return nil
	}
	body, err := encode(e)
	if err != nil {
		q.dropped(e, id, "invalid_event", err)
		return nil
	}
	return &connection.OutboxEntry{UserID: e.UserID, DeliveryID: id, Type: e.Type, Body: string(body), CreatedAt: now}
}

// Send puts the first attempt of a stored entry on the queue and then
// deletes the entry from the outbox. It returns once both are done or
// failed, waiting for Queue and Table Storage only (each bounded by
// Timeout), never for the CMS. The wait is detached from ctx's
// cancellation: a client that hangs up after the change was stored should
// not delay the event until the sweep.
//
// A failed enqueue leaves the entry for Recover (webhook_enqueue_deferred,
// warning: the event is late, not lost); a failed delete leaves it too
// (outbox_delete_failed), and Recover then sends a duplicate that the CMS
// drops by delivery ID.
func (q *Enqueuer) Send(ctx context.Context, e *connection.OutboxEntry) {
	if e == nil {
		return
	}
	if q.Outbox == nil {
		panic("events: Enqueuer.Outbox is required")
	}
	ctx = context.WithoutCancel(ctx)
	if err := q.enqueue(ctx, *e); err != nil {
		q.Log.Warn().Str("event", "webhook_enqueue_deferred").Str("user_id", e.UserID).Str("delivery_id", e.DeliveryID).
			Str("event_type", e.Type).Err(err).Msg("could not enqueue the webhook delivery; the sweep sends it from the outbox")
		return
	}
	dctx, cancel := context.WithTimeout(ctx, q.timeout())
	defer cancel()
	if err := q.Outbox.DeleteOutbox(dctx, *e); err != nil {
		q.Log.Warn().Str("event", "outbox_delete_failed").Str("user_id", e.UserID).Str("delivery_id", e.DeliveryID).
			Err(err).Msg("enqueued, but could not remove the outbox entry; the sweep sends it again (a duplicate the CMS drops)")
	}
}

// Recover sends every outbox entry older than RecoverAfter, with its
// original delivery ID and body, and deletes it: the events whose process
// died, or whose enqueue failed, after their change was stored. The sweep
// calls it once per run. It returns how many it enqueued; an entry that
// fails stays for the next sweep.
func (q *Enqueuer) Recover(ctx context.Context) (int, error) {
	if q.Now == nil {
		panic("events: Enqueuer.Now is required")
	}
	after := q.RecoverAfter
	if after <= 0 {
		after = DefaultRecoverAfter
	}
	before := q.Now().Add(-after)
	sent := 0
	for {
		entries, err := q.Outbox.ListOutbox(ctx, before, recoverPage)
		if err != nil {
			return sent, fmt.Errorf("events: recover: %w", err)
		}
		failed := 0
		for _, e := range entries {
			if err := q.enqueue(ctx, e); err != nil {
				failed++
				q.Log.Warn().Str("event", "webhook_enqueue_deferred").Str("user_id", e.UserID).Str("delivery_id", e.DeliveryID).
					Str("event_type", e.Type).Err(err).Msg("could not enqueue a webhook delivery from the outbox; the next sweep tries again")
				continue
			}
			sent++
			q.Log.Info().Str("event", "webhook_recovered").Str("user_id", e.UserID).Str("delivery_id", e.DeliveryID).
				Str("event_type", e.Type).Dur("age", q.Now().Sub(e.CreatedAt)).Msg("webhook_recovered")
			if err := q.Outbox.DeleteOutbox(ctx, e); err != nil {
				// Listing again would send it again: stop here, the next
				// sweep sends it (a duplicate the CMS drops).
				return sent, fmt.Errorf("events: recover: delete outbox entry: %w", err)
			}
		}
		// A full page whose entries were all removed may have more behind
		// it; anything else is the whole outbox (or a queue outage).
		if len(entries) < recoverPage || failed > 0 {
			return sent, nil
		}
	}
}

// enqueue puts e's first attempt on the queue; it returns once Queue
// Storage has stored it.
func (q *Enqueuer) enqueue(ctx context.Context, e connection.OutboxEntry) error {
	text, err := message{DeliveryID: e.DeliveryID, Body: e.Body, Attempt: 1, FirstEnqueuedAt: e.CreatedAt.UTC()}.encode()
	if err != nil {
		return err
	}
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.timeout())
	defer cancel()
	if err := q.Queue.Send(sendCtx, text, 0); err != nil {
		return fmt.Errorf("events: enqueue %s: %w", e.Type, err)
	}
	q.Log.Info().Str("event", "webhook_enqueued").Str("user_id", e.UserID).Str("delivery_id", e.DeliveryID).
		Str("event_type", e.Type).Msg("webhook_enqueued")
	return nil
}

func (q *Enqueuer) timeout() time.Duration {
	if q.Timeout > 0 {
		return q.Timeout
	}
	return DefaultEnqueueTimeout
}

func (q *Enqueuer) dropped(e connection.Event, id, reason string, err error) {
	q.Log.Error().Str("event", "webhook_dropped").Str("user_id", e.UserID).Str("delivery_id", id).
		Str("event_type", e.Type).Str("reason", reason).Err(err).Msg("webhook_dropped")
}

func (q *Enqueuer) rand() io.Reader {
	if q.Rand != nil {
		return q.Rand
	}
	return rand.Reader
}
