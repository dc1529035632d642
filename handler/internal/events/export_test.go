package events

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Verify reports whether signatureHeader is a valid X-MEGDocs-Signature of
// body under secret. It is what the CMS does with each delivery: compute the
// HMAC over the raw bytes received (before any JSON parsing) and compare in
// constant time. An empty secret never verifies.
func Verify(secret string, body []byte, signatureHeader string) bool {
	if secret == "" {
		return false
	}
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(signatureHeader), signaturePrefix)
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// PublishID prepares e and enqueues its first attempt (Send without an
// outbox), returning the delivery ID it assigned.
func (q *Enqueuer) PublishID(ctx context.Context, e connection.Event) (string, error) {
	ob := q.Prepare(e)
	if ob == nil {
		return "", errors.New("events: prepare failed")
	}
	return ob.DeliveryID, q.enqueue(ctx, *ob)
}
