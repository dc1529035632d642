// Package queuehost plays the Azure Functions host's queue trigger where no
// host runs: `make run` (devstack) and the tests. It polls a Storage queue
// and POSTs each message to the handler as the host does (POST
// /<function>, the custom-handler invocation payload of
// funchost/testdata/queue_request.json), deletes the message on a 2xx,
// and otherwise makes it visible again after host.json's visibilityTimeout,
// moving it to "<queue>-poison" once it has been received maxDequeueCount
// times. It reads those settings from host.json itself, so the local stack
// runs with the values Azure runs with.
//
// The behaviour follows the WebJobs storage extension (QueueListener,
// QueueProcessor): a message is received invisible for 10 minutes, so one
// whose invocation never ends (the handler killed) reappears after that;
// an empty queue is polled with a growing pause up to maxPollingInterval.
// Development and test tooling only: nothing in the deployed handler
// imports it.
package queuehost

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/storagequeue"
)

// Settings are host.json's extensions.queues values the trigger obeys.
type Settings struct {
	MaxPollingInterval time.Duration
	VisibilityTimeout  time.Duration
	MaxDequeueCount    int64
	BatchSize          int
	// MessageEncoding is "base64" or "none".
	MessageEncoding string
}

// Defaults are the storage extension's defaults (host.json reference).
func Defaults() Settings {
	return Settings{MaxPollingInterval: time.Minute, VisibilityTimeout: 0, MaxDequeueCount: 5, BatchSize: 16, MessageEncoding: "base64"}
}

// ReadHostJSON reads extensions.queues from a host.json; absent values keep
// the defaults.
func ReadHostJSON(path string) (Settings, error) {
	s := Defaults()
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("queuehost: %w", err)
	}
	var f struct {
		Extensions struct {
			Queues struct {
				MaxPollingInterval string `json:"maxPollingInterval"`
				VisibilityTimeout  string `json:"visibilityTimeout"`
				MaxDequeueCount    *int64 `json:"maxDequeueCount"`
				BatchSize          *int   `json:"batchSize"`
				MessageEncoding    string `json:"messageEncoding"`
			} `json:"queues"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return s, fmt.Errorf("queuehost: %s: %w", path, err)
	}
	q := f.Extensions.Queues
	for _, d := range []struct {
		in  string
		out *time.Duration
	}{{q.MaxPollingInterval, &s.MaxPollingInterval}, {q.VisibilityTimeout, &s.VisibilityTimeout}} {
		if d.in == "" {
			continue
		}
		v, err := ParseTimeSpan(d.in)
		if err != nil {
			return s, fmt.Errorf("queuehost: %s: %w", path, err)
		}
		*d.out = v
	}
	if q.MaxDequeueCount != nil {
		s.MaxDequeueCount = *q.MaxDequeueCount
	}
	if q.BatchSize != nil {
		s.BatchSize = *q.BatchSize
	}
	if q.MessageEncoding != "" {
		s.MessageEncoding = q.MessageEncoding
	}
	return s, nil
}

var timeSpan = regexp.MustCompile(`^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$`)

// ParseTimeSpan reads a .NET TimeSpan as host.json writes it:
// [d.]hh:mm:ss[.fffffff].
func ParseTimeSpan(s string) (time.Duration, error) {
	m := timeSpan.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("queuehost: %q is not a TimeSpan (hh:mm:ss)", s)
	}
	n := func(x string) time.Duration { v, _ := strconv.Atoi(x); return time.Duration(v) }
	d := n(m[1])*24*time.Hour + n(m[2])*time.Hour + n(m[3])*time.Minute + n(m[4])*time.Second
	if m[5] != "" {
		frac := m[5] + "0000000"[len(m[5]):]
		d += n(frac) * 100 * time.Nanosecond
	}
	return d, nil
}

// Options configure a Host.
type Options struct {
	// Queue is the triggering queue; Poison is "<queue>-poison".
	Queue, Poison *storagequeue.Queue
	// HandlerURL is the custom handler's base URL.
	HandlerURL string
	// Function is the function's folder name (the route); Binding the
	// trigger's name in its function.json.
	Function, Binding string
	Settings          Settings
	// HTTPClient calls the handler (default: no timeout but the host's
	// function timeout, 10 minutes).
	HTTPClient *http.Client
	Log        zerolog.Logger
}

// lease is how long a received message stays invisible while its
// invocation runs (the extension's 10 minutes; it renews a longer run).
const lease = 10 * time.Minute

// minPoll is the extension's shortest pause between polls of an empty
// queue.
const minPoll = 100 * time.Millisecond

// Host polls one queue and invokes one function. Start it with Start.
type Host struct {
	o      Options
	url    handlerURL
	cancel context.CancelFunc
	done   chan struct{}
}

// handlerURL holds the handler's URL, replaceable while running.
type handlerURL struct {
	mu sync.Mutex
	u  string
}

func (c *handlerURL) get() string  { c.mu.Lock(); defer c.mu.Unlock(); return c.u }
func (c *handlerURL) set(u string) { c.mu.Lock(); c.u = u; c.mu.Unlock() }

// SetHandlerURL points the trigger at a handler restarted elsewhere (the
// host restarts a dead worker; a test's restarted child has a new port).
func (h *Host) SetHandlerURL(u string) { h.url.set(u) }

// Start runs the trigger until Stop.
func Start(o Options) *Host {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: lease}
	}
	if o.Settings.BatchSize <= 0 {
		o.Settings.BatchSize = Defaults().BatchSize
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Host{o: o, cancel: cancel, done: make(chan struct{})}
	h.url.set(o.HandlerURL)
	go h.run(ctx)
	return h
}

// Stop ends polling and waits for invocations in flight. A message taken
// but not settled stays invisible until its lease ends, as after a host
// crash.
func (h *Host) Stop() {
	h.cancel()
	<-h.done
}

func (h *Host) run(ctx context.Context) {
	defer close(h.done)
	wait := minPoll
	for {
		msgs, err := h.o.Queue.Receive(ctx, h.o.Settings.BatchSize, lease)
		if err != nil && ctx.Err() == nil {
			h.o.Log.Warn().Str("event", "queue_poll_failed").Err(err).Msg("queue_poll_failed")
		}
		if len(msgs) > 0 {
			var wg sync.WaitGroup
			for _, m := range msgs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.process(ctx, m)
				}()
			}
			wg.Wait()
			wait = minPoll
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, max(h.o.Settings.MaxPollingInterval, minPoll))
	}
}

// process settles one message as the extension's QueueProcessor does.
func (h *Host) process(ctx context.Context, m storagequeue.Message) {
	log := h.o.Log.With().Str("queue", h.o.Queue.Name()).Str("message_id", m.ID).Int64("dequeue_count", m.DequeueCount).Logger()
	// A message received more often than allowed (its invocations kept
	// dying) goes to poison without another try.
	if m.DequeueCount > h.o.Settings.MaxDequeueCount {
		h.poison(ctx, m, log)
		return
	}
	text := []byte(m.Text)
	if h.o.Settings.MessageEncoding != "none" {
		b, err := m.Body()
		if err != nil {
			log.Warn().Err(err).Str("event", "queue_message_undecodable").Msg("queue_message_undecodable")
			h.poison(ctx, m, log)
			return
		}
		text = b
	}
	status, err := h.invoke(ctx, m, text)
	if ctx.Err() != nil {
		return // stopping: the lease brings the message back
	}
	if err == nil && status >= 200 && status < 300 {
		if err := h.o.Queue.Delete(ctx, m); err != nil {
			log.Warn().Err(err).Str("event", "queue_delete_failed").Msg("queue_delete_failed")
		}
		return
	}
	log.Info().Int("status", status).AnErr("error", err).Str("event", "queue_invocation_failed").Msg("queue_invocation_failed")
	if m.DequeueCount >= h.o.Settings.MaxDequeueCount {
		h.poison(ctx, m, log)
		return
	}
	if err := h.o.Queue.Release(ctx, m, h.o.Settings.VisibilityTimeout); err != nil {
		log.Warn().Err(err).Str("event", "queue_release_failed").Msg("queue_release_failed")
	}
}

func (h *Host) poison(ctx context.Context, m storagequeue.Message, log zerolog.Logger) {
	if err := h.o.Poison.SendText(ctx, m.Text); err != nil {
		log.Warn().Err(err).Str("event", "queue_poison_failed").Msg("queue_poison_failed")
		return
	}
	if err := h.o.Queue.Delete(ctx, m); err != nil {
		log.Warn().Err(err).Str("event", "queue_delete_failed").Msg("queue_delete_failed")
	}
	log.Warn().Str("event", "queue_message_poisoned").Str("poison_queue", h.o.Poison.Name()).Msg("queue_message_poisoned")
}

func (h *Host) invoke(ctx context.Context, m storagequeue.Message, text []byte) (int, error) {
	body, err := Payload(h.o.Function, h.o.Binding, m, text, time.Now(), randomGUID())
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url.get()+"/"+h.o.Function, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Azure-Functions-InvocationId", randomGUID())
	req.Header.Set("User-Agent", "Azure-Functions-Host/4.1040.300.0")
	resp, err := h.o.HTTPClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// Payload builds the host's invocation body for message m with text (the
// decoded message) at now: see funchost/testdata/queue_request.json.
func Payload(function, binding string, m storagequeue.Message, text []byte, now time.Time, randGUID string) ([]byte, error) {
	md := map[string]any{
		"DequeueCount":    strconv.FormatInt(m.DequeueCount, 10),
		"ExpirationTime":  dateTimeOffset(m.ExpirationTime),
		"Id":              newtonsoft(m.ID),
		"InsertionTime":   dateTimeOffset(m.InsertionTime),
		"NextVisibleTime": dateTimeOffset(m.NextVisibleTime),
		"PopReceipt":      newtonsoft(m.PopReceipt),
	}
	// The extension adds a JSON message's top-level properties to the
	// binding data; the host serialises each value like any other.
	var fields map[string]json.RawMessage
	if json.Unmarshal(text, &fields) == nil {
		for k, raw := range fields {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil || v == nil {
				continue
			}
			if _, taken := md[k]; taken {
				continue
			}
			switch x := v.(type) {
			case string:
				md[k] = newtonsoft(x)
			case map[string]any, []any:
				md[k] = raw
			default:
				md[k] = string(bytes.TrimSpace(raw))
			}
		}
	}
	md["sys"] = map[string]string{
		"MethodName": function,
		"UtcNow":     now.UTC().Format("2006-01-02T15:04:05.0000000Z"),
		"RandGuid":   randGUID,
	}
	req := map[string]any{
		"Data":     map[string]string{binding: newtonsoft(string(text))},
		"Metadata": md,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Newtonsoft does not escape < > &
	if err := enc.Encode(req); err != nil {
		return nil, fmt.Errorf("queuehost: payload: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// newtonsoft is JsonConvert.SerializeObject of a string: the JSON literal,
// quotes included, without HTML escaping.
func newtonsoft(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

// dateTimeOffset is how Newtonsoft writes the DateTimeOffset the host
// re-parses from its ToString(): whole seconds, "+00:00".
func dateTimeOffset(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05-07:00")
}

func randomGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
