package events

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Defaults of Options. They keep the contract's promise: the first retry
// within 30 seconds (MinBackoff 5 s gives a first wait of 2.5-5 s), retries
// for at least 10 minutes (GiveUpAfter 15 min).
const (
	DefaultQueueSize      = 1000
	DefaultWorkers        = 4
	DefaultMinBackoff     = 5 * time.Second
	DefaultMaxBackoff     = 2 * time.Minute
	DefaultGiveUpAfter    = 15 * time.Minute
	DefaultAttemptTimeout = 30 * time.Second
)

const userAgent = "megdocs-msconnector-webhook/1"

// maxDrain bounds how much of a response body is read (and thrown away) so
// the connection can be reused without letting a CMS stream to us forever.
const maxDrain = 64 << 10

// Options configure a Publisher. Zero values take the defaults above.
type Options struct {
	// URL is CMS_WEBHOOK_URL. Empty: New returns a publisher that does
	// nothing, because the webhook is optional.
	URL string
	// Secret returns the current cms-webhook-secret. It is called before
	// every attempt so a rotated secret takes effect on the next retry; an
	// error or an empty secret fails that attempt (it is retried later):
	// an event is never sent unsigned.
	Secret func(ctx context.Context) (string, error)
	// HTTPClient sends the deliveries (the process-wide client with its
	// timeouts). Redirects are never followed, whatever it is configured
	// to do. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock for an event's default At and for GiveUpAfter.
	// Waits between attempts use real timers.
	Now    func() time.Time
	Logger zerolog.Logger
	// Rand is the source of event IDs. Default crypto/rand.Reader.
	Rand io.Reader
	// QueueSize bounds the events held at once: queued, being sent, or
	// waiting for a retry. Publish drops (and logs) an event beyond it.
	QueueSize int
	// Workers is how many deliveries run at once.
	Workers int
	// MinBackoff is the wait before the first retry; each later retry
	// waits twice the previous one, up to MaxBackoff; each wait is
	// jittered down by up to half.
	MinBackoff, MaxBackoff time.Duration
	// GiveUpAfter: once an event has failed for this long since its first
	// attempt (by Now), the next failure gives up and logs webhook_failed.
	GiveUpAfter time.Duration
	// AttemptTimeout bounds one attempt, secret read included.
	AttemptTimeout time.Duration
}

// Publisher delivers events to the CMS webhook. A Publisher is safe for
// concurrent use. A nil *Publisher, or one built without a URL, accepts
// events and does nothing.
//
// How: Publish only encodes and makes a non-blocking send to a bounded
// channel. One dispatcher goroutine owns every event after that: a FIFO of
// events due now, and a heap of events waiting for a retry, ordered by due
// time, behind a single timer. A fixed set of workers makes the HTTP
// attempts and report back. So a failing event waits for its retry in the
// heap, not in a worker (it never holds up the others), the goroutine count
// is fixed whatever the backlog (a goroutine or timer per waiting retry
// would not be), and Close can collect every waiting event at once because
// one goroutine owns them all. QueueSize bounds queued, in-flight and
// waiting events together, which bounds memory during a long CMS outage.
type Publisher struct {
	noop bool

	url            string
	secret         func(context.Context) (string, error)
	client         *http.Client
	now            func() time.Time
	log            zerolog.Logger
	queueSize      int64
	minBackoff     time.Duration
	maxBackoff     time.Duration
	giveUpAfter    time.Duration
	attemptTimeout time.Duration

	randMu sync.Mutex // an injected io.Reader need not be safe for concurrent use
	rand   io.Reader

	// mu orders Publish against Close: Publish enqueues under the read
	// lock, Close flips closed under the write lock, so once Close holds
	// it nothing more can land in in after the dispatcher drained it.
	mu     sync.RWMutex
	closed bool

	// outstanding counts events held (queued, in flight, waiting for a
	// retry). Bounding it bounds memory, and since every event in in holds
	// a unit of it, a send on in (capacity queueSize) can never block.
	outstanding atomic.Int64

	in      chan *delivery // Publish -> dispatcher
	work    chan *delivery // dispatcher -> workers
	results chan result    // workers -> dispatcher

	baseCtx context.Context // parent of every attempt; cancelled on abort
	cancel  context.CancelFunc

	closing   chan struct{} // closed by Close: stop accepting, drain
	abort     chan struct{} // closed when Close's ctx ends: stop sending
	done      chan struct{} // closed when the dispatcher and workers stopped
	closeOnce sync.Once
	abortOnce sync.Once
	workers   sync.WaitGroup
}

// delivery is one event on its way. The worker running an attempt owns it;
// between attempts only the dispatcher touches it.
type delivery struct {
	id     string
	userID string
	typ    string
	body   []byte // built once: every attempt sends these bytes

	attempts int
	first    time.Time // by Now, at the first attempt: GiveUpAfter counts from here
	due      time.Time // real time of the next attempt while waiting
}

type result struct {
	d      *delivery
	status int   // HTTP status, 0 when none was received
	err    error // nil: delivered
}

// StatusError is the failure of an attempt the CMS answered with a non-2xx
// status.
type StatusError struct{ StatusCode int }

func (e *StatusError) Error() string {
	return fmt.Sprintf("events: webhook answered %d", e.StatusCode)
}

// ErrEmptySecret fails an attempt when cms-webhook-secret is empty: an empty
// HMAC key would be an unsigned event in disguise.
var ErrEmptySecret = errors.New("events: webhook secret is empty")

// New returns a running Publisher, or a no-op one when o.URL is empty. Call
// Close when done with it.
func New(o Options) (*Publisher, error) {
	if o.URL == "" {
		return &Publisher{noop: true}, nil
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("events: webhook url: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("events: webhook url: want an absolute http(s) URL")
	}
	if o.Secret == nil {
		return nil, errors.New("events: a webhook url needs a secret source")
	}
	o = withDefaults(o)
	if o.MinBackoff > o.MaxBackoff {
		return nil, fmt.Errorf("events: min backoff %s above max backoff %s", o.MinBackoff, o.MaxBackoff)
	}

	// A copy of the shared client, so its transport (and connection pool)
	// is shared but redirects are not followed: net/http would turn a
	// redirected POST into a GET without the body, and a signed event must
	// not be sent wherever a 3xx points. A 3xx is a failure like any other.
	client := *o.HTTPClient
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		url:            o.URL,
		secret:         o.Secret,
		client:         &client,
		now:            o.Now,
		log:            o.Logger,
		rand:           o.Rand,
		queueSize:      int64(o.QueueSize),
		minBackoff:     o.MinBackoff,
		maxBackoff:     o.MaxBackoff,
		giveUpAfter:    o.GiveUpAfter,
		attemptTimeout: o.AttemptTimeout,
		in:             make(chan *delivery, o.QueueSize),
		work:           make(chan *delivery),
		results:        make(chan result, o.Workers),
		baseCtx:        ctx,
		cancel:         cancel,
		closing:        make(chan struct{}),
		abort:          make(chan struct{}),
		done:           make(chan struct{}),
	}
	for range o.Workers {
		p.workers.Add(1)
		go p.worker()
	}
	go p.dispatch()
	return p, nil
}

func withDefaults(o Options) Options {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DefaultAttemptTimeout}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = DefaultGiveUpAfter
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	return o
}

// Publish queues e for delivery and returns at once: it never waits for the
// CMS, a worker or a lock held across I/O. When the queue is full, or the
// publisher is closed, the event is dropped and logged (webhook_dropped,
// error level): losing a notification beats stalling a user's request. A
// zero e.At becomes now; an empty e.ID gets a random one.
func (p *Publisher) Publish(e Event) {
	if p == nil || p.noop {
		return
	}
	if e.At.IsZero() {
		e.At = p.now()
	}
	if e.ID == "" {
		p.randMu.Lock()
		id, err := newID(p.rand)
		p.randMu.Unlock()
		if err != nil {
			p.dropped(e, "event_id", err)
			return
		}
		e.ID = id
	}
	body, err := encode(e)
	if err != nil {
		p.dropped(e, "invalid_event", err)
		return
	}
	d := &delivery{id: e.ID, userID: e.UserID, typ: e.Type, body: body}
	if reason := p.enqueue(d); reason != "" {
		p.dropped(e, reason, nil) // logged outside the lock: no I/O under it
	}
}

// enqueue hands d to the dispatcher without blocking, or says why not.
func (p *Publisher) enqueue(d *delivery) (dropReason string) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return "closed"
	}
	if p.outstanding.Add(1) > p.queueSize {
		p.outstanding.Add(-1)
		return "queue_full"
	}
	select {
	case p.in <- d:
		return ""
	default: // unreachable while outstanding bounds in; never block regardless
		p.outstanding.Add(-1)
		return "queue_full"
	}
}

func (p *Publisher) dropped(e Event, reason string, err error) {
	ev := p.log.Error().Str("event", "webhook_dropped").Str("user_id", e.UserID).Str("event_id", e.ID).Str("event_type", e.Type).Str("reason", reason)
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("webhook_dropped")
}

// Close stops accepting events and makes one last attempt at every event
// still held, including those waiting for a retry (a stopping instance
// cannot wait out a backoff). It returns nil once all are settled. When ctx
// ends first, attempts in flight are cancelled, every event not delivered
// is logged as webhook_failed (reason shutdown), and ctx's error is
// returned. Close is safe to call more than once.
func (p *Publisher) Close(ctx context.Context) error {
	if p == nil || p.noop {
		return nil
	}
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.closing)
	})
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		select {
		case <-p.done: // finished just as ctx ended
			return nil
		default:
		}
		p.abortOnce.Do(func() { close(p.abort) })
		// Every attempt's context derives from baseCtx, which abort
		// cancels, so this wait is short.
		<-p.done
		return fmt.Errorf("events: close: %w", ctx.Err())
	}
}

// dispatch owns the queue and the retry heap; only it decides what to send
// next, so there is no shared state to lock between deliveries.
func (p *Publisher) dispatch() {
	defer func() {
		close(p.work)
		p.workers.Wait()
		p.cancel()
		close(p.done)
	}()

	var (
		ready    []*delivery // FIFO of deliveries due now
		waiting  retryHeap
		timer    = time.NewTimer(time.Hour)
		timerC   <-chan time.Time
		inFlight int
		draining bool
		closing  = p.closing
		abort    = p.abort
	)
	timer.Stop()
	defer timer.Stop()

	rearm := func() {
		if waiting.Len() == 0 {
			timer.Stop()
			timerC = nil
			return
		}
		timer.Reset(time.Until(waiting[0].due))
		timerC = timer.C
	}
	startDraining := func() {
		draining = true
		closing = nil
		for drained := false; !drained; {
			select {
			case d := <-p.in:
				ready = append(ready, d)
			default:
				drained = true
			}
		}
		for waiting.Len() > 0 {
			ready = append(ready, heap.Pop(&waiting).(*delivery))
		}
		rearm()
	}

	for {
		if draining && len(ready) == 0 && inFlight == 0 && waiting.Len() == 0 {
			return
		}
		var work chan<- *delivery
		var head *delivery
		if len(ready) > 0 {
			work, head = p.work, ready[0]
		}
		select {
		case d := <-p.in:
			ready = append(ready, d)
		case work <- head:
			ready[0] = nil
			ready = ready[1:]
			inFlight++
		case r := <-p.results:
			inFlight--
			if d, wait := p.settle(r, draining); d != nil {
				d.due = time.Now().Add(wait)
				heap.Push(&waiting, d)
				rearm()
			}
		case <-timerC:
			now := time.Now()
			for waiting.Len() > 0 && !waiting[0].due.After(now) {
				ready = append(ready, heap.Pop(&waiting).(*delivery))
			}
			rearm()
		case <-closing:
			startDraining()
		case <-abort:
			abort = nil
			if !draining {
				startDraining()
			}
			p.cancel()
			for _, d := range ready {
				p.failed(d, "shutdown", nil)
			}
			ready = nil
		}
	}
}

// settle records the outcome of an attempt. It returns the delivery and its
// wait when it is to be retried, nil when it is finished either way.
func (p *Publisher) settle(r result, draining bool) (*delivery, time.Duration) {
	d := r.d
	if r.err == nil {
		p.outstanding.Add(-1)
		p.log.Info().Str("event", "webhook_delivered").Str("user_id", d.userID).Str("event_id", d.id).Str("event_type", d.typ).
			Int("attempts", d.attempts).Int("status", r.status).Msg("webhook_delivered")
		return nil, 0
	}
	if draining {
		p.failed(d, "shutdown", r.err)
		return nil, 0
	}
	// At least GiveUpAfter of trying: give up only on a failure that comes
	// after it has passed, never schedule past it by refusing a retry.
	if p.now().Sub(d.first) >= p.giveUpAfter {
		p.failed(d, "gave_up", r.err)
		return nil, 0
	}
	wait := backoff(d.attempts, p.minBackoff, p.maxBackoff, mrand.Int64N)
	ev := p.log.Warn().Str("event", "webhook_retry").Str("user_id", d.userID).Str("event_id", d.id).Str("event_type", d.typ).
		Int("attempt", d.attempts).Err(r.err).Int64("retry_in_ms", wait.Milliseconds())
	if r.status != 0 {
		ev = ev.Int("status", r.status)
	}
	ev.Msg("webhook_retry")
	return d, wait
}

// failed logs an event that will not be delivered and frees its place.
func (p *Publisher) failed(d *delivery, reason string, err error) {
	p.outstanding.Add(-1)
	ev := p.log.Error().Str("event", "webhook_failed").Str("user_id", d.userID).Str("event_id", d.id).Str("event_type", d.typ).
		Str("reason", reason).Int("attempts", d.attempts)
	if !d.first.IsZero() {
		ev = ev.Int64("elapsed_s", int64(p.now().Sub(d.first)/time.Second))
	}
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("webhook_failed")
}

func (p *Publisher) worker() {
	defer p.workers.Done()
	for d := range p.work {
		p.results <- p.attempt(d)
	}
}

// attempt sends d once.
func (p *Publisher) attempt(d *delivery) result {
	if d.attempts == 0 {
		d.first = p.now()
	}
	d.attempts++
	ctx, cancel := context.WithTimeout(p.baseCtx, p.attemptTimeout)
	defer cancel()

	secret, err := p.secret(ctx)
	if err != nil {
		return result{d: d, err: fmt.Errorf("events: webhook secret: %w", err)}
	}
	if secret == "" {
		return result{d: d, err: ErrEmptySecret}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(d.body))
	if err != nil {
		return result{d: d, err: fmt.Errorf("events: request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(DeliveryHeader, d.id)
	req.Header.Set(SignatureHeader, Sign(secret, d.body))

	resp, err := p.client.Do(req)
	if err != nil {
		return result{d: d, err: fmt.Errorf("events: post: %w", withoutURL(err))}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return result{d: d, status: resp.StatusCode, err: &StatusError{StatusCode: resp.StatusCode}}
	}
	return result{d: d, status: resp.StatusCode}
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

// backoff returns the wait before retry n (n >= 1): min·2^(n-1), capped at
// max, with "equal jitter" (uniform in [half, full]). Jitter spreads the
// retries of the many events that fail together when the CMS is down;
// keeping half fixed keeps the schedule's total length predictable.
// randN(k) returns a uniform int64 in [0, k).
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

// retryHeap orders waiting deliveries by due time (container/heap).
type retryHeap []*delivery

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(*delivery)) }
func (h *retryHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return d
}
