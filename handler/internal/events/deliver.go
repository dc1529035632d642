package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"
)

// The retry schedule (contract: Events). An attempt n that fails is
// followed by attempt n+1 after backoff(n): 10 s·2^(n-1) capped at 1 h,
// jittered down by up to half, so the first retry comes 5-10 s later (plus
// at most host.json's maxPollingInterval, 2 s): within the contract's 30 s.
// A failure at or after GiveUpAfter since the first enqueue drops the
// event: retried for at least 24 h, about 35 attempts.
const (
	DefaultMinBackoff     = 10 * time.Second
	DefaultMaxBackoff     = time.Hour
	DefaultGiveUpAfter    = 24 * time.Hour
	DefaultAttemptTimeout = 15 * time.Second
)

const userAgent = "megdocs-msconnector-webhook/2"

// maxDrain bounds how much of a response body is read (and thrown away) so
// the connection can be reused without letting a CMS stream to us forever.
const maxDrain = 64 << 10

// StatusError is the failure of an attempt the CMS answered with a non-2xx
// status.
type StatusError struct{ StatusCode int }

func (e *StatusError) Error() string {
	return fmt.Sprintf("events: webhook answered %d", e.StatusCode)
}

// ErrEmptySecret fails an attempt when cms-webhook-secret is empty: an empty
// HMAC key would be an unsigned event in disguise.
var ErrEmptySecret = errors.New("events: webhook secret is empty")

// Deliverer makes one delivery attempt per queue message: the queue-
// triggered function's work. It keeps nothing in memory between messages,
// so any instance can take any attempt, and an instance that dies loses
// nothing (the host shows the message again). Safe for concurrent use.
type Deliverer struct {
	// URL is CMS_WEBHOOK_URL.
	URL string
	// Secret returns the current cms-webhook-secret, read at every attempt
	// so a rotated secret signs the next one. An error or an empty secret
	// fails the attempt (retried later): an event is never sent unsigned.
	Secret func(ctx context.Context) (string, error)
	// HTTPClient sends the attempts (the process-wide client). Redirects
	// are never followed, whatever it is configured to do.
	HTTPClient *http.Client
	// Queue takes the next attempt; Poison keeps what is dropped, where
	// an operator can replay it (docs/operations.md).
	Queue, Poison Sender
	// Now is the clock of the 24-hour window. Required: Deliver panics
	// without it.
	Now func() time.Time
	Log zerolog.Logger
	// Zero values take the defaults above.
	MinBackoff, MaxBackoff, GiveUpAfter, AttemptTimeout time.Duration
	// RandN(k) is uniform in [0, k): the backoff's jitter (default
	// math/rand/v2's).
	RandN func(int64) int64
}

// Outcome is what became of one message.
type Outcome int

const (
	// Delivered: the CMS answered 2xx.
	Delivered Outcome = iota + 1
	// Retrying: the attempt failed; the next one is on the queue.
	Retrying
	// Dropped: given up (or not a delivery at all); the message is in the
	// poison queue.
	Dropped
)

// Deliver makes the attempt text describes and settles it: delivered,
// next attempt enqueued with its backoff as the message's visibility
// delay, or dropped into the poison queue with a webhook_dropped log line.
// It returns an error only when it could not store that next step (the
// queue or the poison queue refused): the caller then fails the invocation
// and the host shows the same message again.
func (d *Deliverer) Deliver(ctx context.Context, text []byte) (Outcome, error) {
	if d.Now == nil {
		panic("events: Deliverer.Now is required")
	}
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &d.Log
	}
	m, err := decodeMessage(text)
	if err != nil {
		// Not ours to deliver: keep it for a person rather than retry it.
		log.Error().Str("event", "webhook_dropped").Str("reason", "invalid_message").Err(err).Msg("webhook_dropped")
		if err := d.Poison.Send(ctx, text, 0); err != nil {
			return 0, fmt.Errorf("events: poison an invalid message: %w", err)
		}
		return Dropped, nil
	}
	var about struct {
		Type   string `json:"type"`
		UserID string `json:"user_id"`
	}
	_ = json.Unmarshal([]byte(m.Body), &about) // for the log lines only
	l := log.With().Str("user_id", about.UserID).Str("delivery_id", m.DeliveryID).Str("event_type", about.Type).
		Int("attempt", m.Attempt).Logger()

	began := time.Now()
	status, err := d.attempt(ctx, m)
	if err == nil {
		l.Info().Str("event", "webhook_delivered").Int("status", status).
			Int64("since_first_enqueue_ms", d.Now().Sub(m.FirstEnqueuedAt).Milliseconds()).Msg("webhook_delivered")
		return Delivered, nil
	}
	elapsed := d.Now().Sub(m.FirstEnqueuedAt)
	if elapsed >= or(d.GiveUpAfter, DefaultGiveUpAfter) {
		if err := d.Poison.Send(ctx, text, 0); err != nil {
			return 0, fmt.Errorf("events: poison delivery %s: %w", m.DeliveryID, err)
		}
		ev := l.Error().Str("event", "webhook_dropped").Str("reason", "gave_up").Int64("elapsed_s", int64(elapsed/time.Second)).Err(err)
		if status != 0 {
			ev = ev.Int("status", status)
		}
		ev.Msg("webhook_dropped")
		return Dropped, nil
	}
	wait := backoff(m.Attempt, or(d.MinBackoff, DefaultMinBackoff), or(d.MaxBackoff, DefaultMaxBackoff), d.randN())
	next := m
	next.Attempt++
	nextText, encErr := next.encode()
	if encErr != nil {
		return 0, encErr
	}
	if err := d.Queue.Send(ctx, nextText, wait); err != nil {
		return 0, fmt.Errorf("events: enqueue attempt %d of %s: %w", next.Attempt, m.DeliveryID, err)
	}
	ev := l.Warn().Str("event", "webhook_retry").Err(err).Int64("retry_in_ms", wait.Milliseconds()).
		Int64("attempt_ms", time.Since(began).Milliseconds())
	if status != 0 {
		ev = ev.Int("status", status)
	}
	ev.Msg("webhook_retry")
	return Retrying, nil
}

// attempt POSTs the body once, signed with the current secret.
func (d *Deliverer) attempt(ctx context.Context, m message) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, or(d.AttemptTimeout, DefaultAttemptTimeout))
	defer cancel()
	secret, err := d.Secret(ctx)
	if err != nil {
		return 0, fmt.Errorf("events: webhook secret: %w", err)
	}
	if secret == "" {
		return 0, ErrEmptySecret
	}
	body := []byte(m.Body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("events: request: %w", withoutURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(DeliveryHeader, m.DeliveryID)
	req.Header.Set(SignatureHeader, Sign(secret, body))

	resp, err := d.client().Do(req)
	if err != nil {
		return 0, fmt.Errorf("events: post: %w", withoutURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &StatusError{StatusCode: resp.StatusCode}
	}
	return resp.StatusCode, nil
}

// client is a copy of HTTPClient that never follows a redirect: net/http
// would turn a redirected POST into a GET without the body, and a signed
// event must not be sent wherever a 3xx points. A 3xx is a failure.
func (d *Deliverer) client() *http.Client {
	c := http.Client{Timeout: DefaultAttemptTimeout}
	if d.HTTPClient != nil {
		c = *d.HTTPClient
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func (d *Deliverer) randN() func(int64) int64 {
	if d.RandN != nil {
		return d.RandN
	}
	return mrand.Int64N
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// withoutURL drops the URL net/http puts in its errors: CMS_WEBHOOK_URL may
// carry a token in its query, and these errors are logged.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// backoff returns the wait after failed attempt n (n >= 1): min·2^(n-1),
// capped at max, with "equal jitter" (uniform in [half, full]). Jitter
// spreads the retries of the many events that fail together when the CMS
// is down; keeping half fixed keeps the schedule's total length
// predictable. randN(k) returns a uniform int64 in [0, k).
func backoff(n int, minWait, maxWait time.Duration, randN func(int64) int64) time.Duration {
	d := minWait
	for i := 1; i < n && d < maxWait; i++ {
		if d > maxWait/2 {
			d = maxWait
			break
		}
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(randN(int64(d-half)+1))
}

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Retrying:
		return "retrying"
	case Dropped:
		return "dropped"
	}
	return "unknown"
}
