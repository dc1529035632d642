package connection

import (
	"context"
	"time"
)

// OutboxEntry is an event stored with the change it reports, in the same
// storage transaction (the transactional outbox): if the change is stored,
// so is its event, whatever happens to the process afterwards. The
// publisher then enqueues it and removes it; the sweep re-enqueues entries
// that are still there after a grace period (a crash, or a queue outage,
// between the two). It never holds a token: Body is the webhook's JSON.
type OutboxEntry struct {
	UserID string
	// DeliveryID is X-MEGDocs-Delivery: every enqueue of the entry, the
	// normal one and any recovery, uses it, so the CMS drops duplicates.
	DeliveryID string
	Type       string // the event type, for logs
	// Body is the exact JSON every delivery attempt POSTs and signs.
	Body string
	// CreatedAt is when the event was raised: it starts the 24-hour retry
	// window and ages the entry for the sweep's recovery.
	CreatedAt time.Time
}

// OutboxStore is the part of Store that writes a change together with its
// event. The *WithEvent methods are Create, Update and Delete plus the
// insert of ev, in one transaction: both are stored or neither is (a
// failed ETag condition stores no entry). A nil ev is the plain method, so
// callers need no branch for "no webhook configured".
//
// Three variants rather than an extra parameter on Create, Update and
// Delete: most writes (refreshes, usage, throttling pauses) report no
// event, and their callers stay as they are.
type OutboxStore interface {
	// CreateWithEvent is Create plus ev. With ev, the returned connection
	// has no ETag (a Table transaction's answer carries none): read it
	// again before a conditional write.
	CreateWithEvent(ctx context.Context, c Connection, ev *OutboxEntry) (Connection, error)
	// UpdateWithEvent is Update plus ev; the same ETag rule as
	// CreateWithEvent.
	UpdateWithEvent(ctx context.Context, c Connection, ev *OutboxEntry) (Connection, error)
	// DeleteWithEvent is Delete plus ev. With ev it returns ErrNotFound,
	// and stores nothing, when there was no connection: no change, no
	// event.
	DeleteWithEvent(ctx context.Context, userID string, ev *OutboxEntry) error
	// ListOutbox returns up to limit (1..1000) entries created before
	// `before`, of any user, in no particular order.
	ListOutbox(ctx context.Context, before time.Time, limit int) ([]OutboxEntry, error)
	// DeleteOutbox removes e (by UserID and DeliveryID); nil if it is gone.
	DeleteOutbox(ctx context.Context, e OutboxEntry) error
}
