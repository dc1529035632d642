// Package storagequeue is the adapter to Azure Queue Storage (azqueue): the
// queues of the Functions host's own storage account, on which queue-
// triggered functions run. It sends messages (with a delay, never expiring)
// and, for whoever plays the host's queue trigger locally, receives,
// releases and deletes them.
//
// It knows nothing of what a message means: webhook deliveries today, the
// sweep's refreshes later (docs/architecture.md). It owns the storage
// format only: every message is base64 text, the encoding host.json's
// extensions.queues.messageEncoding declares (the host decodes before it
// invokes; a message that does not decode goes straight to poison).
package storagequeue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"
)

// PoisonSuffix names a queue's poison queue, as the Functions host names it:
// "<queue>-poison".
const PoisonSuffix = "-poison"

// MaxDelay is Queue Storage's longest visibility timeout (7 days).
const MaxDelay = 7 * 24 * time.Hour

// neverExpires is the time-to-live "-1": the message stays until deleted.
// The default (7 days) would silently drop a poisoned delivery an operator
// has not replayed yet.
const neverExpires = int32(-1)

// developmentConnectionString is what UseDevelopmentStorage=true stands for
// (Azurite's documented defaults). azqueue does not parse the shorthand.
const developmentConnectionString = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"

// Options say how to reach the queue service: ConnectionString
// (AzureWebJobsStorage, Azurite and development), else ServiceURL
// (AzureWebJobsStorage__queueServiceUri) with Credential (the app's managed
// identity).
type Options struct {
	ConnectionString string
	ServiceURL       string
	Credential       azcore.TokenCredential
	// HTTPClient is the process-wide client (its timeouts apply).
	HTTPClient *http.Client
}

// Service is one storage account's queue service. Safe for concurrent use.
type Service struct {
	c *azqueue.ServiceClient
}

// New returns a Service. It makes no call.
func New(o Options) (*Service, error) {
	opts := &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{
		// Two quick retries ride out a blip; the caller's own deadline
		// bounds the whole send.
		Retry: policy.RetryOptions{MaxRetries: 2, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 2 * time.Second},
	}}
	if o.HTTPClient != nil {
		opts.Transport = o.HTTPClient
	}
	var (
		c   *azqueue.ServiceClient
		err error
	)
	switch {
	case o.ConnectionString != "":
		c, err = azqueue.NewServiceClientFromConnectionString(ExpandConnectionString(o.ConnectionString), opts)
	case o.ServiceURL != "":
		if o.Credential == nil {
			return nil, errors.New("storagequeue: a service URL needs a credential")
		}
		c, err = azqueue.NewServiceClient(o.ServiceURL, o.Credential, opts)
	default:
		return nil, errors.New("storagequeue: neither a connection string nor a service URL")
	}
	if err != nil {
		return nil, fmt.Errorf("storagequeue: %w", err)
	}
	return &Service{c: c}, nil
}

// ExpandConnectionString replaces the UseDevelopmentStorage=true shorthand
// (local.settings.json's AzureWebJobsStorage) with the full Azurite
// connection string it stands for; any other string is returned unchanged.
func ExpandConnectionString(cs string) string {
	for _, part := range strings.Split(cs, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if strings.EqualFold(strings.TrimSpace(k), "UseDevelopmentStorage") && strings.EqualFold(strings.TrimSpace(v), "true") {
			return developmentConnectionString
		}
	}
	return cs
}

// Queue returns the queue called name. It makes no call.
func (s *Service) Queue(name string) *Queue {
	return &Queue{name: name, c: s.c.NewQueueClient(name)}
}

// Queue is one queue. Safe for concurrent use.
type Queue struct {
	name string
	c    *azqueue.QueueClient
}

// Name is the queue's name.
func (q *Queue) Name() string { return q.name }

// Send puts text on the queue, invisible for delay (0: at once; at most
// MaxDelay), never expiring. It returns once Queue Storage has stored it.
// A missing queue is created (Azurite starts empty; in Azure the deployment
// creates it, and creating an existing queue is a no-op).
func (q *Queue) Send(ctx context.Context, text []byte, delay time.Duration) error {
	return q.send(ctx, base64.StdEncoding.EncodeToString(text), delay)
}

// SendText puts already-encoded text (a Message's Text) on the queue as it
// is, at once and never expiring: moving a message to a poison queue keeps
// its bytes.
func (q *Queue) SendText(ctx context.Context, text string) error {
	return q.send(ctx, text, 0)
}

func (q *Queue) send(ctx context.Context, content string, delay time.Duration) error {
	// Whole seconds, rounded up: a retry is never earlier than its backoff.
	delay = min(max(delay, 0), MaxDelay-time.Second)
	secs := int32((delay + time.Second - 1) / time.Second)
	opts := &azqueue.EnqueueMessageOptions{TimeToLive: ptr(neverExpires), VisibilityTimeout: &secs}
	_, err := q.c.EnqueueMessage(ctx, content, opts)
	if err != nil && queueerror.HasCode(err, queueerror.QueueNotFound) {
		if err = q.create(ctx); err == nil {
			_, err = q.c.EnqueueMessage(ctx, content, opts)
		}
	}
	if err != nil {
		return fmt.Errorf("storagequeue: send to %s: %w", q.name, err)
	}
	return nil
}

// create makes the queue; an existing one is fine.
func (q *Queue) create(ctx context.Context) error {
	if _, err := q.c.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		return fmt.Errorf("storagequeue: create %s: %w", q.name, err)
	}
	return nil
}

// Message is one received message.
type Message struct {
	ID         string
	PopReceipt string
	// DequeueCount counts receives, this one included.
	DequeueCount    int64
	InsertionTime   time.Time
	ExpirationTime  time.Time
	NextVisibleTime time.Time
	// Text is the stored content (the base64 form): what the host reads
	// and what a poison queue keeps.
	Text string
}

// Body decodes Text. An error means the message was not written in the
// queue's encoding (the host would poison it).
func (m Message) Body() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(m.Text)
	if err != nil {
		return nil, fmt.Errorf("storagequeue: message %s is not base64: %w", m.ID, err)
	}
	return b, nil
}

// Receive takes up to n (1-32) visible messages and hides them for
// visibility. An absent queue holds no messages.
func (q *Queue) Receive(ctx context.Context, n int, visibility time.Duration) ([]Message, error) {
	num := int32(min(max(n, 1), 32))
	vis := int32(max(visibility/time.Second, 1))
	resp, err := q.c.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &num, VisibilityTimeout: &vis})
	if err != nil {
		if queueerror.HasCode(err, queueerror.QueueNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("storagequeue: receive from %s: %w", q.name, err)
	}
	out := make([]Message, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		out = append(out, Message{
			ID: deref(m.MessageID), PopReceipt: deref(m.PopReceipt), DequeueCount: deref(m.DequeueCount),
			InsertionTime: deref(m.InsertionTime), ExpirationTime: deref(m.ExpirationTime),
			NextVisibleTime: deref(m.TimeNextVisible), Text: deref(m.MessageText),
		})
	}
	return out, nil
}

// Peek returns up to n (1-32) visible messages without receiving them
// (DequeueCount unchanged; no PopReceipt).
func (q *Queue) Peek(ctx context.Context, n int) ([]Message, error) {
	num := int32(min(max(n, 1), 32))
	resp, err := q.c.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: &num})
	if err != nil {
		if queueerror.HasCode(err, queueerror.QueueNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("storagequeue: peek %s: %w", q.name, err)
	}
	out := make([]Message, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		out = append(out, Message{
			ID: deref(m.MessageID), DequeueCount: deref(m.DequeueCount), InsertionTime: deref(m.InsertionTime),
			ExpirationTime: deref(m.ExpirationTime), Text: deref(m.MessageText),
		})
	}
	return out, nil
}

// Release makes a received message visible again after visibility (the
// host's "abandon" of a failed invocation).
func (q *Queue) Release(ctx context.Context, m Message, visibility time.Duration) error {
	vis := int32(min(max(visibility, 0), MaxDelay-time.Second) / time.Second)
	if _, err := q.c.UpdateMessage(ctx, m.ID, m.PopReceipt, m.Text, &azqueue.UpdateMessageOptions{VisibilityTimeout: &vis}); err != nil {
		return fmt.Errorf("storagequeue: release %s from %s: %w", m.ID, q.name, err)
	}
	return nil
}

// Delete removes a received message.
func (q *Queue) Delete(ctx context.Context, m Message) error {
	if _, err := q.c.DeleteMessage(ctx, m.ID, m.PopReceipt, nil); err != nil {
		return fmt.Errorf("storagequeue: delete %s from %s: %w", m.ID, q.name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
