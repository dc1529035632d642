// Package events tells the CMS when a connection's status changes, through the
// optional webhook of the contract ("Events"). The Enqueuer builds the JSON
// body once per event and puts it, with its delivery ID, on a Storage queue
// before the request that caused it returns; the queue-triggered Deliverer
// signs it with the cms-webhook-secret (HMAC-SHA256) and POSTs it, one
// attempt per queue message, scheduling the next attempt as a new message
// with a backoff delay. Nothing lives in an instance's memory, so an event
// survives the instance that raised it, and a slow or absent CMS never
// delays a user's request, a callback or a sweep.
//
// It owns the wire format of events and of their queue messages, their
// signature and the retry schedule. It does not decide when a status
// changes (connectflow, tokens and sweep do), does not talk to Queue
// Storage itself (a Sender is injected) and does not read settings or
// secrets: the URL and a function returning the current secret are
// injected.
package events

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Header names of a delivery.
const (
	// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the raw body>".
	SignatureHeader = "X-MEGDocs-Signature"
	// DeliveryHeader carries the event ID: the same on every retry, so the
	// CMS can drop duplicates.
	DeliveryHeader = "X-MEGDocs-Delivery"
)

const signaturePrefix = "sha256="

// validType reports whether t is one of the contract's event types.
func validType(t string) bool {
	switch t {
	case connection.EventConnected, connection.EventReconnectRequired, connection.EventRecovered, connection.EventDisconnected:
		return true
	}
	return false
}

// wireAccount and wireEvent are the contract's JSON. Pointers without
// omitempty make absent values an explicit null: the CMS relies on every key
// being present.
type wireAccount struct {
	ID          string `json:"id"`
	TenantID    string `json:"tenant_id"`
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
}

type wireEvent struct {
	Type    string       `json:"type"`
	UserID  string       `json:"user_id"`
	At      string       `json:"at"`
	Account *wireAccount `json:"account"`
	Reason  *string      `json:"reason"`
}

// encode builds the body of e. It is called once per event: every retry
// sends these same bytes, so the signature and any deduplication on the CMS
// side see one event, not one per attempt.
func encode(e connection.Event) ([]byte, error) {
	if !validType(e.Type) {
		return nil, fmt.Errorf("events: encode: unknown event type %q", e.Type)
	}
	if e.UserID == "" {
		return nil, fmt.Errorf("events: encode: empty user_id")
	}
	w := wireEvent{
		Type:   e.Type,
		UserID: e.UserID,
		// Second precision, like every other time in the contract; the CMS
		// reads GET /api/connections/{user_id} for the current truth.
		At: e.At.UTC().Format(time.RFC3339),
	}
	if e.Account != nil {
		w.Account = &wireAccount{
			ID:          e.Account.ID,
			TenantID:    e.Account.TenantID,
			Email:       e.Account.Email,
			DisplayName: e.Account.DisplayName,
		}
	}
	if e.Reason != "" {
		r := e.Reason
		w.Reason = &r
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// user_id and names are opaque text: keep "<", ">" and "&" as they are
	// rather than \u003c escapes, so the body reads as the CMS sent it.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("events: encode: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Sign returns the X-MEGDocs-Signature value for body:
// "sha256=" + hex(HMAC-SHA256(secret, body)).
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// newID returns a random RFC 9562 version 4 UUID: 122 random bits make a
// collision between two events practically impossible, and the form fits a
// UUID column on the CMS side for deduplication.
func newID(r io.Reader) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("events: event id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}
