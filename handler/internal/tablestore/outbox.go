package tablestore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Outbox rows live in the connections table, in the user's partition,
// beside the connection row (RowKey "microsoft"): that is what lets one
// entity-group transaction (same table, same PartitionKey) store a change
// and the event that reports it, both or neither. RowKey is
// "outbox-<delivery id>". They hold the webhook body (the account's ids,
// e-mail and name, as plain as the connection row's), never a token.
const outboxPrefix = "outbox-"

// outboxEnd is the first RowKey after every "outbox-..." key ('.' follows
// '-' in ASCII), for a range filter.
const outboxEnd = "outbox."

// Columns of an outbox row.
const (
	colDeliveryID = "DeliveryID"
	colEventType  = "EventType"
	colBody       = "Body"
	// colCreatedAt is shared with the pending table's column of that name.
)

// connectionsOnly keeps listings of connections off the outbox rows.
const connectionsOnly = "RowKey eq '" + rowMicrosoft + "'"

// maxBody is well inside a Table string property's 64 KiB (UTF-16).
const maxBody = 30000

// ErrInvalidOutbox: an outbox entry no valid row can hold.
var ErrInvalidOutbox = errors.New("invalid outbox entry")

// ValidOutboxEntry refuses what no outbox row can hold: an invalid
// user_id, a delivery ID that is not lower-case hex and dashes (1-64), an
// empty type or body, a body too large for a property, no creation time.
func ValidOutboxEntry(e connection.OutboxEntry) error {
	if err := connection.ValidUserID(e.UserID); err != nil {
		return err
	}
	if n := len(e.DeliveryID); n < 1 || n > 64 || strings.Trim(e.DeliveryID, "0123456789abcdef-") != "" {
		return fmt.Errorf("%w: delivery id %q", ErrInvalidOutbox, e.DeliveryID)
	}
	switch {
	case e.Type == "":
		return fmt.Errorf("%w: no type", ErrInvalidOutbox)
	case e.Body == "" || len(e.Body) > maxBody:
		return fmt.Errorf("%w: body of %d bytes", ErrInvalidOutbox, len(e.Body))
	case e.CreatedAt.IsZero():
		return fmt.Errorf("%w: no creation time", ErrInvalidOutbox)
	}
	return nil
}

func outboxEntity(e connection.OutboxEntry) ([]byte, error) {
	props := map[string]any{colUserID: e.UserID, colDeliveryID: e.DeliveryID, colEventType: e.Type, colBody: e.Body}
	setTime(props, colCreatedAt, e.CreatedAt)
	return marshalEntity(partitionKey(e.UserID), outboxPrefix+e.DeliveryID, props)
}

// CreateWithEvent is Create plus the insert of ev, in one transaction. The
// returned connection has no ETag (the transaction's answer has none).
func (s *Store) CreateWithEvent(ctx context.Context, c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	if ev == nil {
		return s.Create(ctx, c)
	}
	if err := ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", err)
	}
	if c.ConnectedAt.IsZero() {
		c.ConnectedAt = s.now()
	}
	body, err := s.encodeConnection(ctx, c)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", err)
	}
	if err := s.transact(ctx, c.UserID, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: body}, ev); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: create: %w", err)
	}
	c.ETag = ""
	return c, nil
}

// UpdateWithEvent is Update (If-Match c.ETag) plus the insert of ev, in
// one transaction: a failed condition stores neither. The returned
// connection has no ETag.
func (s *Store) UpdateWithEvent(ctx context.Context, c connection.Connection, ev *connection.OutboxEntry) (connection.Connection, error) {
	if ev == nil {
		return s.Update(ctx, c)
	}
	if err := ValidConnection(c); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", err)
	}
	if c.ETag == "" {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w: connection has no etag", connection.ErrConflict)
	}
	body, err := s.encodeConnection(ctx, c)
	if err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", err)
	}
	etag := azcore.ETag(c.ETag)
	if err := s.transact(ctx, c.UserID, aztables.TransactionAction{ActionType: aztables.TransactionTypeUpdateReplace, Entity: body, IfMatch: &etag}, ev); err != nil {
		return connection.Connection{}, fmt.Errorf("tablestore: update: %w", err)
	}
	c.ETag = ""
	return c, nil
}

// DeleteWithEvent deletes the connection (whatever its ETag, as Delete)
// plus the insert of ev, in one transaction; an error wrapping
// connection.ErrNotFound, and nothing stored, if there was none.
func (s *Store) DeleteWithEvent(ctx context.Context, userID string, ev *connection.OutboxEntry) error {
	if ev == nil {
		return s.Delete(ctx, userID)
	}
	if err := connection.ValidUserID(userID); err != nil {
		return fmt.Errorf("tablestore: delete: %w", err)
	}
	key, err := marshalEntity(partitionKey(userID), rowMicrosoft, map[string]any{})
	if err != nil {
		return fmt.Errorf("tablestore: delete: %w", err)
	}
	any := azcore.ETagAny
	if err := s.transact(ctx, userID, aztables.TransactionAction{ActionType: aztables.TransactionTypeDelete, Entity: key, IfMatch: &any}, ev); err != nil {
		return fmt.Errorf("tablestore: delete: %w", err)
	}
	return nil
}

// transact submits change plus the insert of ev as one entity-group
// transaction in userID's partition.
func (s *Store) transact(ctx context.Context, userID string, change aztables.TransactionAction, ev *connection.OutboxEntry) error {
	if err := ValidOutboxEntry(*ev); err != nil {
		return err
	}
	if ev.UserID != userID {
		return fmt.Errorf("%w: outbox entry of user %q with a change of %q", ErrInvalidOutbox, ev.UserID, userID)
	}
	row, err := outboxEntity(*ev)
	if err != nil {
		return err
	}
	if err := s.ensure(ctx); err != nil {
		return err
	}
	_, err = s.conns.SubmitTransaction(ctx, []aztables.TransactionAction{
		change,
		{ActionType: aztables.TransactionTypeAdd, Entity: row},
	}, nil)
	if err != nil {
		return mapTransactionError(err)
	}
	return nil
}

// mapTransactionError classifies a failed transaction. aztables reports a
// failed operation inside the batch as a ResponseError of the batch's own
// answer (202 Accepted, no error code: "ERROR CODE UNAVAILABLE"); the
// failed operation's status and code are in the multipart body, as an
// embedded HTTP response. So the sentinels come from that inner status
// line and OData error code.
func mapTransactionError(err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	if re.StatusCode != http.StatusAccepted || re.RawResponse == nil {
		return mapError(err)
	}
	payload, perr := runtime.Payload(re.RawResponse)
	if perr != nil {
		return err
	}
	status, code := 0, ""
	if m := innerStatus.FindSubmatch(payload); m != nil {
		status, _ = strconv.Atoi(string(m[1]))
	}
	if m := innerCode.FindSubmatch(payload); m != nil {
		code = string(m[1])
	}
	switch {
	case status == http.StatusNotFound && code != string(aztables.TableNotFound):
		return fmt.Errorf("%w: %w", connection.ErrNotFound, err)
	case status == http.StatusPreconditionFailed,
		status == http.StatusConflict && code == string(aztables.EntityAlreadyExists):
		return fmt.Errorf("%w: %w", connection.ErrConflict, err)
	}
	return err
}

// innerStatus and innerCode find the failed operation in a batch answer:
// its embedded status line (4xx/5xx) and its OData error code.
var (
	innerStatus = regexp.MustCompile(`HTTP/1\.1 ([45]\d\d) `)
	innerCode   = regexp.MustCompile(`"code"\s*:\s*"([A-Za-z]+)"`)
)

// ListOutbox returns up to limit outbox rows created before `before`, of
// every partition. It scans the table's key range of outbox rows, so it
// reads no connection row; the outbox is near empty in steady state.
func (s *Store) ListOutbox(ctx context.Context, before time.Time, limit int) ([]connection.OutboxEntry, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("tablestore: list outbox: %w: limit %d not in 1..1000", ErrInvalidQuery, limit)
	}
	if err := s.ready(ctx, "list outbox"); err != nil {
		return nil, err
	}
	filter := "RowKey ge '" + outboxPrefix + "' and RowKey lt '" + outboxEnd + "' and " +
		colCreatedAt + " lt datetime'" + before.UTC().Format("2006-01-02T15:04:05.0000000Z") + "'"
	opts := aztables.ListEntitiesOptions{Filter: &filter}
	out := []connection.OutboxEntry{}
	pager := s.conns.NewListEntitiesPager(&opts)
	for pager.More() && len(out) < limit {
		resp, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("tablestore: list outbox: %w", err)
		}
		for _, raw := range resp.Entities {
			if len(out) == limit {
				break
			}
			e, err := parseEntity(raw)
			if err != nil {
				return nil, fmt.Errorf("tablestore: list outbox: %w", err)
			}
			var ob connection.OutboxEntry
			r := &columns{e: e}
			r.str(colUserID, &ob.UserID)
			r.str(colDeliveryID, &ob.DeliveryID)
			r.str(colEventType, &ob.Type)
			r.str(colBody, &ob.Body)
			r.time(colCreatedAt, &ob.CreatedAt)
			if r.err != nil {
				return nil, fmt.Errorf("tablestore: list outbox: %w", r.err)
			}
			out = append(out, ob)
		}
	}
	return out, nil
}

// DeleteOutbox removes e's row; nil if it is gone.
func (s *Store) DeleteOutbox(ctx context.Context, e connection.OutboxEntry) error {
	if err := ValidOutboxEntry(e); err != nil {
		return fmt.Errorf("tablestore: delete outbox: %w", err)
	}
	if err := s.ready(ctx, "delete outbox"); err != nil {
		return err
	}
	if _, err := s.conns.DeleteEntity(ctx, partitionKey(e.UserID), outboxPrefix+e.DeliveryID, nil); err != nil && !isNotFound(err) {
		return fmt.Errorf("tablestore: delete outbox: %w", err)
	}
	return nil
}
