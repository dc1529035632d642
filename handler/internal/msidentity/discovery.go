package msidentity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/lifetime"
)

// The discovery document names the issuer, which changes with the cloud and
// the tenant segment, never from one request to the next: it is fetched at
// most once an hour. A failed fetch is remembered only briefly, so a
// burst of callbacks during an outage costs one request per interval and
// a recovered authority is used again within seconds.
const (
	discoveryTTL        = time.Hour
	discoveryFailureTTL = 10 * time.Second
	// discoveryTimeout bounds one fetch, whatever the caller's deadline:
	// the fetch is shared by every waiting callback.
	discoveryTimeout = 10 * time.Second
)

// tenantPlaceholder is the template Microsoft's multi-tenant discovery
// documents (common, organizations) put in `issuer` for the user's tenant.
const tenantPlaceholder = "{tenantid}"

// DiscoveryError: the authority's OpenID Connect discovery document could
// not be fetched, was not a 200 with JSON, or announced no usable issuer.
// Without it no id_token can be checked, so the code exchange is not
// attempted. The callback answers server_error: it is our side (or the
// authority's) that failed, not the user's sign-in.
type DiscoveryError struct {
	// URL is the document's address (it holds no secret), for the log.
	URL string
	Err error
}

// Error names the URL and the cause.
func (e *DiscoveryError) Error() string {
	return "msidentity: discovery: " + e.URL + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *DiscoveryError) Unwrap() error { return e.Err }

// ErrorClass is transient: a network failure must never blame the user.
func (e *DiscoveryError) ErrorClass() connection.Class { return connection.ClassTransient }

// ErrorCode is "discovery_failed".
func (e *DiscoveryError) ErrorCode() string { return "discovery_failed" }

// ServerError reports that the exchange was never judged: the callback
// answers server_error rather than exchange_failed.
func (e *DiscoveryError) ServerError() bool { return true }

var _ connection.ClassifiedError = (*DiscoveryError)(nil)

// discovery caches the issuer template of one authority and tenant. Safe for
// concurrent use: callers that find no fresh value share one fetch.
type discovery struct {
	url     string
	hc      *http.Client
	now     func() time.Time
	timeout time.Duration // discoveryTimeout; tests shorten it

	mu        sync.Mutex
	issuer    string    // last good issuer template
	fetchedAt time.Time // when issuer was fetched
	failure   error     // last failed fetch, if newer than the good one
	failedAt  time.Time
	inflight  *fetchCall // the running fetch, if any

	// The fetch outlives the caller that started it; close ends it.
	life lifetime.Group
}

// fetchCall is one fetch and, once done is closed, its outcome.
type fetchCall struct {
	done   chan struct{}
	issuer string
	err    error
}

func newDiscovery(authority, tenant string, hc *http.Client, now func() time.Time) *discovery {
	return &discovery{
		url: authority + "/" + url.PathEscape(tenant) + "/v2.0/.well-known/openid-configuration",
		hc:  hc, now: now, timeout: discoveryTimeout,
	}
}

// errClosed answers an exchange that needs a fetch after Close.
var errClosed = errors.New("msidentity: closed")

// close cancels a fetch in flight and waits for it, at most until ctx is
// done; later fetches fail with errClosed.
func (d *discovery) close(ctx context.Context) error {
	if err := d.life.Close(ctx); err != nil {
		return fmt.Errorf("msidentity: close: %w", err)
	}
	return nil
}

// issuerTemplate returns the announced issuer, possibly holding
// {tenantid}. A fresh good value is served without a request; a failure is
// remembered apart and never stored over the good value.
func (d *discovery) issuerTemplate(ctx context.Context) (string, error) {
	d.mu.Lock()
	now := d.now()
	if d.issuer != "" && now.Sub(d.fetchedAt) < discoveryTTL {
		iss := d.issuer
		d.mu.Unlock()
		return iss, nil
	}
	if d.failure != nil && now.Sub(d.failedAt) < discoveryFailureTTL {
		err := d.failure
		d.mu.Unlock()
		return "", err
	}
	call := d.inflight
	if call == nil {
		call = &fetchCall{done: make(chan struct{})}
		// Detached from the caller: the fetch serves every waiter, and
		// one browser closing its tab must not fail the others. Its
		// lifetime is the Client's.
		if !d.life.Go(ctx, func(ctx context.Context) { d.fetch(ctx, call) }) {
			d.mu.Unlock()
			return "", &DiscoveryError{URL: d.url, Err: errClosed}
		}
		d.inflight = call
	}
	d.mu.Unlock()
	select {
	case <-call.done:
		return call.issuer, call.err
	case <-ctx.Done():
		return "", &DiscoveryError{URL: d.url, Err: ctx.Err()}
	}
}

// fetch reads the document once and records the outcome.
func (d *discovery) fetch(ctx context.Context, call *fetchCall) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	iss, err := d.get(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	defer close(call.done)
	d.inflight = nil
	if err != nil {
		call.err = &DiscoveryError{URL: d.url, Err: err}
		d.failure, d.failedAt = call.err, d.now()
		return
	}
	call.issuer = iss
	d.issuer, d.fetchedAt, d.failure = iss, d.now(), nil
}

// errNoIssuer etc. describe unusable documents.
var (
	errNoIssuer  = errors.New("document has no issuer")
	errBadIssuer = errors.New("issuer is not an absolute http(s) URL")
)

// get sends the request and checks the answer.
func (d *discovery) get(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxBody))
	if err := dec.Decode(&doc); err != nil {
		return "", fmt.Errorf("malformed document: %w", err)
	}
	if doc.Issuer == "" {
		return "", errNoIssuer
	}
	if u, err := url.Parse(doc.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		// http only ever comes from a loopback stand-in; the authority
		// host itself is configured, and its scheme checked, in New.
		return "", errBadIssuer
	}
	return doc.Issuer, nil
}

// issuerTenant is the tenant segment of a v2.0 issuer
// (https://{host}/{tenant}/v2.0): the placeholder, or a fixed tenant.
func issuerTenant(issuer string) string {
	u, err := url.Parse(issuer)
	if err != nil {
		return ""
	}
	seg, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	return seg
}

// expectedIssuer is the issuer an id_token from tenant tid must carry:
// the template with {tenantid} replaced. A template without the
// placeholder (consumers, a tenant ID) is a fixed issuer.
func expectedIssuer(template, tid string) string {
	return strings.ReplaceAll(template, tenantPlaceholder, tid)
}
