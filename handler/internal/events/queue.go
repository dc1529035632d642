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

// Enqueuer turns events into delivery messages on the webhook queue. It is
// the write side of the webhook: the queue-triggered Deliverer is the
// other. Safe for concurrent use.
type Enqueuer struct {
	Queue Sender
	Log   zerolog.Logger
	// Now stamps the first enqueue (and At when an event has none).
	// Required: Publish panics without it.
	Now func() time.Time
	// Rand is the source of delivery IDs (default crypto/rand.Reader).
	Rand io.Reader
	// Timeout bounds one enqueue (default DefaultEnqueueTimeout).
	Timeout time.Duration

	randMu sync.Mutex // an injected io.Reader need not be safe for concurrent use
}

var _ connection.Publisher = (*Enqueuer)(nil)

// Publish builds e's body once, gives it a random delivery ID and puts the first
// attempt on the queue. It returns once Queue Storage has stored it, so
// the event is as durable as the change it reports: call it after the
// change is stored and before answering whoever caused it.
//
// It waits for Queue Storage only (bounded by Timeout), never for the CMS.
// The wait is detached from ctx's cancellation: a client that hangs up
// after the change was stored must not cost the event.
//
// On failure the event is lost: Publish logs webhook_dropped (reason
// enqueue_failed, error level, for the same alert as a delivery given up)
// and returns the error. Callers do not fail their request on it: the
// change is stored and the caller's own answer reports it.
func (q *Enqueuer) Publish(ctx context.Context, e connection.Event) error {
	_, err := q.publish(ctx, e)
	return err
}

// publish is Publish, returning the delivery ID it gave the event.
func (q *Enqueuer) publish(ctx context.Context, e connection.Event) (string, error) {
	if q.Now == nil {
		panic("events: Enqueuer.Now is required")
	}
	now := q.Now()
	if e.At.IsZero() {
		e.At = now
	}
	q.randMu.Lock()
	id, err := newID(q.rand())
	q.randMu.Unlock()
	if err != nil {
		return "", q.dropped(e, "", "event_id", err)
	}
	body, err := encode(e)
	if err != nil {
		return id, q.dropped(e, id, "invalid_event", err)
	}
	text, err := message{DeliveryID: id, Body: string(body), Attempt: 1, FirstEnqueuedAt: now.UTC()}.encode()
	if err != nil {
		return id, q.dropped(e, id, "invalid_event", err)
	}
	timeout := q.Timeout
	if timeout <= 0 {
		timeout = DefaultEnqueueTimeout
	}
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := q.Queue.Send(sendCtx, text, 0); err != nil {
		return id, q.dropped(e, id, "enqueue_failed", err)
	}
	q.Log.Info().Str("event", "webhook_enqueued").Str("user_id", e.UserID).Str("delivery_id", id).
		Str("event_type", e.Type).Msg("webhook_enqueued")
	return id, nil
}

func (q *Enqueuer) dropped(e connection.Event, id, reason string, err error) error {
	q.Log.Error().Str("event", "webhook_dropped").Str("user_id", e.UserID).Str("delivery_id", id).
		Str("event_type", e.Type).Str("reason", reason).Err(err).Msg("webhook_dropped")
	return fmt.Errorf("events: publish %s: %w", e.Type, err)
}

func (q *Enqueuer) rand() io.Reader {
	if q.Rand != nil {
		return q.Rand
	}
	return rand.Reader
}
