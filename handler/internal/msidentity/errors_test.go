package msidentity

import (
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/logtest"
)

// Microsoft's error bodies, as the token endpoint sends them.
const (
	bodyInvalidGrant700082 = `{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2026-08-01T10:00:00.0000000Z and was inactive for 90.00:00:00. Trace ID: 0b7e1c1a-6f1d-4b7e-9c57-2a1d0e6f3b00 Correlation ID: 7c1b2d3e-0000-4000-8000-000000000001 Timestamp: 2026-11-25 23:30:00Z\r\nTrace ID: 0b7e1c1a-6f1d-4b7e-9c57-2a1d0e6f3b00\r\nCorrelation ID: 7c1b2d3e-0000-4000-8000-000000000001\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[700082],"timestamp":"2026-11-25 23:30:00Z","trace_id":"0b7e1c1a-6f1d-4b7e-9c57-2a1d0e6f3b00","correlation_id":"7c1b2d3e-0000-4000-8000-000000000001","error_uri":"https://login.microsoftonline.com/error?code=700082","suberror":"bad_token"}`
	bodyInvalidGrant50196  = `{"error":"invalid_grant","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop. Please contact your app vendor.\r\nTrace ID: 1d1e1f00-0000-4000-8000-000000000002\r\nCorrelation ID: 2d2e2f00-0000-4000-8000-000000000002\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[50196],"timestamp":"2026-11-25 23:30:00Z","trace_id":"1d1e1f00-0000-4000-8000-000000000002","correlation_id":"2d2e2f00-0000-4000-8000-000000000002","error_uri":"https://login.microsoftonline.com/error?code=50196"}`
	bodyInvalidClient      = `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '11111111-2222-3333-4444-555555555555'.\r\nTrace ID: 3d3e3f00-0000-4000-8000-000000000003\r\nCorrelation ID: 4d4e4f00-0000-4000-8000-000000000003\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[7000215],"timestamp":"2026-11-25 23:30:00Z","trace_id":"3d3e3f00-0000-4000-8000-000000000003","correlation_id":"4d4e4f00-0000-4000-8000-000000000003","error_uri":"https://login.microsoftonline.com/error?code=7000215"}`
	bodyInteraction50076   = `{"error":"interaction_required","error_description":"AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '00000003-0000-0000-c000-000000000000'.\r\nTrace ID: 5d5e5f00-0000-4000-8000-000000000004\r\nCorrelation ID: 6d6e6f00-0000-4000-8000-000000000004\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[50076],"timestamp":"2026-11-25 23:30:00Z","trace_id":"5d5e5f00-0000-4000-8000-000000000004","correlation_id":"6d6e6f00-0000-4000-8000-000000000004","error_uri":"https://login.microsoftonline.com/error?code=50076","suberror":"basic_action","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"1\"]}}}"}`
	bodyConsent65001       = `{"error":"consent_required","error_description":"AADSTS65001: The user or administrator has not consented to use the application with ID '11111111-2222-3333-4444-555555555555' named 'MEGDocs'. Send an interactive authorization request for this user and resource.\r\nTrace ID: 7d7e7f00-0000-4000-8000-000000000005\r\nCorrelation ID: 8d8e8f00-0000-4000-8000-000000000005\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[65001],"timestamp":"2026-11-25 23:30:00Z","trace_id":"7d7e7f00-0000-4000-8000-000000000005","correlation_id":"8d8e8f00-0000-4000-8000-000000000005","suberror":"consent_required"}`
	bodyUnauthorized700016 = `{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier '11111111-2222-3333-4444-555555555555' was not found in the directory 'Contoso'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.\r\nTrace ID: 9d9e9f00-0000-4000-8000-000000000006\r\nCorrelation ID: ad ae af00-0000-4000-8000-000000000006\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[700016],"timestamp":"2026-11-25 23:30:00Z","trace_id":"9d9e9f00-0000-4000-8000-000000000006","correlation_id":"adaeaf00-0000-4000-8000-000000000006","error_uri":"https://login.microsoftonline.com/error?code=700016"}`
	bodyCodeReused54005    = `{"error":"invalid_grant","error_description":"AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.\r\nTrace ID: bdbebf00-0000-4000-8000-000000000007\r\nCorrelation ID: cdcecf00-0000-4000-8000-000000000007\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[54005],"timestamp":"2026-11-25 23:30:00Z","trace_id":"bdbebf00-0000-4000-8000-000000000007","correlation_id":"cdcecf00-0000-4000-8000-000000000007"}`
	bodyTemporarily        = `{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred. Please try again.\r\nTrace ID: dddedf00-0000-4000-8000-000000000008\r\nCorrelation ID: edeeef00-0000-4000-8000-000000000008\r\nTimestamp: 2026-11-25 23:30:00Z","error_codes":[90033],"timestamp":"2026-11-25 23:30:00Z","trace_id":"dddedf00-0000-4000-8000-000000000008","correlation_id":"edeeef00-0000-4000-8000-000000000008"}`
)

// TestClassification sends each of Microsoft's answers through both token
// calls (the refresh and the exchange, one path) and checks the
// class, the fields, the pause, and that Error() leaks no description.
func TestClassification(t *testing.T) {
	big := strings.Repeat("x", 10<<20)
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantClass  connection.Class
		wantCode   string
		wantCodes  []int
		wantTrace  string
		wantCorr   string
		wantSub    string
		wantDelay  time.Duration
		wantCalls  int64 // requests the stand-in sees (invalid_client is retried once)
		notInError []string
	}{
		{name: "invalid_grant 700082 inactivity", status: 400, body: bodyInvalidGrant700082,
			wantClass: connection.ClassReconnectRequired, wantCode: "invalid_grant", wantCodes: []int{700082},
			wantTrace: "0b7e1c1a-6f1d-4b7e-9c57-2a1d0e6f3b00", wantCorr: "7c1b2d3e-0000-4000-8000-000000000001", wantSub: "bad_token",
			wantCalls: 1, notInError: []string{"expired due to inactivity", "2026-08-01"}},
		{name: "invalid_grant 50196 loop detected is throttling", status: 400, body: bodyInvalidGrant50196,
			wantClass: connection.ClassTransient, wantCode: "invalid_grant", wantCodes: []int{50196},
			wantTrace: "1d1e1f00-0000-4000-8000-000000000002", wantCorr: "2d2e2f00-0000-4000-8000-000000000002",
			wantDelay: defaultThrottlePause, wantCalls: 1, notInError: []string{"client request loop"}},
		{name: "invalid_client 7000215", status: 401, body: bodyInvalidClient,
			wantClass: connection.ClassConfiguration, wantCode: "invalid_client", wantCodes: []int{7000215},
			wantTrace: "3d3e3f00-0000-4000-8000-000000000003", wantCorr: "4d4e4f00-0000-4000-8000-000000000003",
			wantCalls: 2, notInError: []string{"Invalid client secret", testSecret}},
		{name: "interaction_required 50076 MFA", status: 400, body: bodyInteraction50076,
			wantClass: connection.ClassReconnectRequired, wantCode: "interaction_required", wantCodes: []int{50076},
			wantTrace: "5d5e5f00-0000-4000-8000-000000000004", wantCorr: "6d6e6f00-0000-4000-8000-000000000004", wantSub: "basic_action",
			wantCalls: 1, notInError: []string{"multi-factor"}},
		{name: "consent_required 65001", status: 400, body: bodyConsent65001,
			wantClass: connection.ClassReconnectRequired, wantCode: "consent_required", wantCodes: []int{65001},
			wantTrace: "7d7e7f00-0000-4000-8000-000000000005", wantCorr: "8d8e8f00-0000-4000-8000-000000000005", wantSub: "consent_required",
			wantCalls: 1, notInError: []string{"MEGDocs", "has not consented"}},
		{name: "unauthorized_client 700016", status: 400, body: bodyUnauthorized700016,
			wantClass: connection.ClassConfiguration, wantCode: "unauthorized_client", wantCodes: []int{700016},
			wantTrace: "9d9e9f00-0000-4000-8000-000000000006", wantCorr: "adaeaf00-0000-4000-8000-000000000006",
			wantCalls: 1, notInError: []string{"Contoso"}},
		{name: "invalid_grant 54005 code reused is configuration", status: 400, body: bodyCodeReused54005,
			wantClass: connection.ClassConfiguration, wantCode: "invalid_grant", wantCodes: []int{54005},
			wantTrace: "bdbebf00-0000-4000-8000-000000000007", wantCorr: "cdcecf00-0000-4000-8000-000000000007", wantCalls: 1},
		{name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "30"}, body: bodyTemporarily,
			wantClass: connection.ClassTransient, wantCode: "temporarily_unavailable", wantCodes: []int{90033},
			wantTrace: "dddedf00-0000-4000-8000-000000000008", wantCorr: "edeeef00-0000-4000-8000-000000000008",
			wantDelay: 30 * time.Second, wantCalls: 1},
		{name: "429 with Retry-After date and no JSON", status: 429, header: map[string]string{"Retry-After": "Wed, 25 Nov 2026 23:32:00 GMT", "x-ms-request-id": "gw-1"}, body: "Too Many Requests",
			wantClass: connection.ClassTransient, wantCode: CodeThrottled, wantTrace: "gw-1", wantDelay: 2 * time.Minute, wantCalls: 1},
		{name: "500 HTML page", status: 500, body: "<html><body>Internal Server Error</body></html>",
			wantClass: connection.ClassTransient, wantCode: CodeInvalidResponse, wantCalls: 1},
		{name: "503 temporarily_unavailable", status: 503, body: bodyTemporarily,
			wantClass: connection.ClassTransient, wantCode: "temporarily_unavailable", wantCodes: []int{90033},
			wantTrace: "dddedf00-0000-4000-8000-000000000008", wantCorr: "edeeef00-0000-4000-8000-000000000008", wantCalls: 1},
		{name: "404 from a wrong authority host", status: 404, body: "<html>Not Found</html>",
			wantClass: connection.ClassConfiguration, wantCode: CodeInvalidResponse, wantCalls: 1},
		{name: "200 malformed JSON", status: 200, body: `{"access_token":"at-secret","expires_in":36`,
			wantClass: connection.ClassTransient, wantCode: CodeInvalidResponse, wantCalls: 1, notInError: []string{"at-secret"}},
		{name: "200 without access_token", status: 200, body: `{"token_type":"Bearer","expires_in":3600,"refresh_token":"rt-secret"}`,
			wantClass: connection.ClassTransient, wantCode: CodeInvalidResponse, wantCalls: 1, notInError: []string{"rt-secret"}},
		{name: "200 with a 10 MB body", status: 200, body: `{"access_token":"` + big + `","expires_in":3600}`,
			wantClass: connection.ClassTransient, wantCode: CodeInvalidResponse, wantCalls: 1},
		{name: "400 with a 10 MB body", status: 400, body: `{"error":"invalid_grant","error_description":"` + big + `"}`,
			wantClass: connection.ClassConfiguration, wantCode: CodeInvalidResponse, wantCalls: 1},
	}
	ops := map[string]func(*Client) (Tokens, error){
		"refresh": func(c *Client) (Tokens, error) { return c.Refresh(context.Background(), "rt-secret") },
		"exchange": func(c *Client) (Tokens, error) {
			return c.Exchange(context.Background(), "code-secret", "verifier-secret")
		},
	}
	for _, tt := range tests {
		for opName, op := range ops {
			t.Run(tt.name+"/"+opName, func(t *testing.T) {
				srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
					for k, v := range tt.header {
						w.Header().Set(k, v)
					}
					writeJSONBody(w, tt.status, []byte(tt.body))
				})
				c := newTestClient(t, srv.URL)
				got, err := op(c)
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("error = %v, want *Error", err)
				}
				if got.AccessToken != "" {
					t.Error("tokens returned with an error")
				}
				if e.ErrorClass() != tt.wantClass || connection.ClassOf(err) != tt.wantClass {
					t.Errorf("class = %v, want %v", e.ErrorClass(), tt.wantClass)
				}
				if e.ErrorCode() != tt.wantCode || connection.CodeOf(err, "") != tt.wantCode {
					t.Errorf("code = %q, want %q", e.ErrorCode(), tt.wantCode)
				}
				if !reflect.DeepEqual(e.ErrorCodes, tt.wantCodes) {
					t.Errorf("error codes = %v, want %v", e.ErrorCodes, tt.wantCodes)
				}
				if e.TraceID != tt.wantTrace || e.CorrelationID != tt.wantCorr || e.Suberror != tt.wantSub {
					t.Errorf("trace, correlation, suberror = %q, %q, %q; want %q, %q, %q", e.TraceID, e.CorrelationID, e.Suberror, tt.wantTrace, tt.wantCorr, tt.wantSub)
				}
				if e.HTTPStatus != tt.status || e.Op != opName {
					t.Errorf("status, op = %d, %q; want %d, %q", e.HTTPStatus, e.Op, tt.status, opName)
				}
				if ra, _ := connection.RetryAfterOf(err); ra != tt.wantDelay {
					t.Errorf("RetryAfter = %v, want %v", ra, tt.wantDelay)
				}
				if n := srv.count.Load(); n != tt.wantCalls {
					t.Errorf("requests = %d, want %d", n, tt.wantCalls)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "msidentity: "+opName+": ") {
					t.Errorf("Error() = %q, want the msidentity: %s: prefix", msg, opName)
				}
				for _, s := range append(tt.notInError, "rt-secret", "code-secret", "verifier-secret", "\r\n") {
					if strings.Contains(msg, s) {
						t.Errorf("Error() = %q contains %q", msg, s)
					}
				}
				if len(msg) > 600 {
					t.Errorf("Error() is %d bytes long: the body leaked into it", len(msg))
				}
			})
		}
	}
}

func TestNetworkFailuresAreTransient(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}
	reset := func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST: "connection reset by peer"
		}
		conn.Close()
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		client  *http.Client
		ctx     func() (context.Context, context.CancelFunc)
		is      error
	}{
		{name: "client timeout", handler: slow, client: &http.Client{Timeout: 100 * time.Millisecond}},
		{name: "context deadline", handler: slow, client: &http.Client{Timeout: 5 * time.Second},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
			is: context.DeadlineExceeded},
		{name: "connection reset", handler: reset, client: &http.Client{Timeout: 5 * time.Second}},
	}
	ops := map[string]func(context.Context, *Client) (Tokens, error){
		"refresh":  func(ctx context.Context, c *Client) (Tokens, error) { return c.Refresh(ctx, "rt") },
		"exchange": func(ctx context.Context, c *Client) (Tokens, error) { return c.Exchange(ctx, "code", "verifier") },
		"me": func(ctx context.Context, c *Client) (Tokens, error) {
			_, err := c.Me(ctx, "at")
			return Tokens{}, err
		},
	}
	for _, tt := range tests {
		for opName, op := range ops {
			t.Run(tt.name+"/"+opName, func(t *testing.T) {
				srv := newStandIn(t, tt.handler)
				c := newTestClient(t, srv.URL, withHTTPClient(tt.client))
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if tt.ctx != nil {
					ctx, cancel = tt.ctx()
				}
				defer cancel()
				_, err := op(ctx, c)
				var e *Error
				if !errors.As(err, &e) || e.ErrorCode() != CodeNetworkError || e.ErrorClass() != connection.ClassTransient {
					t.Fatalf("error = %v, want a transient network_error *Error", err)
				}
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
				}
			})
		}
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := newStandIn(t, slow)
		base := srv.URL
		srv.Close()
		c := newTestClient(t, base)
		_, err := c.Refresh(context.Background(), "rt")
		if connection.ClassOf(err) != connection.ClassTransient || connection.CodeOf(err, "") != CodeNetworkError {
			t.Fatalf("Refresh = %v, want transient network_error", err)
		}
	})
}

func TestA429PausesRefreshesButNeverTheCodeExchange(t *testing.T) {
	tests := []struct {
		name      string
		header    string
		body      string
		exchange  bool // the 429 answers a code exchange, not a refresh
		wantPause time.Duration
	}{
		{name: "429 Retry-After seconds", header: "30", body: bodyTemporarily, wantPause: 30 * time.Second},
		{name: "429 Retry-After HTTP date", header: "Wed, 25 Nov 2026 23:30:45 GMT", body: "", wantPause: 45 * time.Second},
		{name: "429 without Retry-After", body: bodyTemporarily, wantPause: defaultThrottlePause},
		{name: "429 on a code exchange", header: "30", body: bodyTemporarily, exchange: true, wantPause: 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			var throttle sync.Once
			var srv *standIn
			srv = newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
				first := false
				throttle.Do(func() { first = true })
				if first {
					if tt.header != "" {
						w.Header().Set("Retry-After", tt.header)
					}
					writeJSONBody(w, 429, []byte(tt.body))
					return
				}
				writeJSONBody(w, 200, tokenJSON(t, map[string]any{"id_token": jwtOf(t, goodClaims(srv.URL))}))
			})
			logs := &logtest.Buffer{}
			c := newTestClient(t, srv.URL, withClock(clk), withLogger(zerolog.New(logs)))

			var err error
			if tt.exchange {
				_, err = c.Exchange(context.Background(), "code", "verifier")
			} else {
				_, err = c.Refresh(context.Background(), "rt")
			}
			if connection.ClassOf(err) != connection.ClassTransient || connection.ThrottleScopeOf(err) != connection.ThrottleInstance {
				t.Fatalf("throttled call = %v, want transient with instance scope", err)
			}
			ev := logs.StrictEvents(t, "throttled")
			if len(ev) != 1 || ev[0]["retry_after_s"] != tt.wantPause.Seconds() || ev[0]["level"] != "warn" || ev[0]["user_id"] != nil {
				t.Fatalf("throttled log events = %v, want one with retry_after_s %v and no user_id", ev, tt.wantPause.Seconds())
			}

			clk.Advance(10 * time.Second)
			remaining := tt.wantPause - 10*time.Second
			// Every refresh fails fast without traffic; every code
			// exchange is sent: a person is waiting for it.
			var wg sync.WaitGroup
			refreshErrs := make(chan error, 10)
			exchangeErrs := make(chan error, 10)
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i%2 == 0 {
						_, err := c.Refresh(context.Background(), "rt")
						refreshErrs <- err
					} else {
						_, err := c.Exchange(context.Background(), "code", "verifier")
						exchangeErrs <- err
					}
				}()
			}
			wg.Wait()
			close(refreshErrs)
			close(exchangeErrs)
			for err := range refreshErrs {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeThrottled || e.ErrorClass() != connection.ClassTransient || e.RetryAfter() != remaining || !errors.Is(err, connection.ErrPaused) {
					t.Fatalf("refresh during the pause = %v, want throttled (ErrPaused) with %v remaining", err, remaining)
				}
				if connection.ThrottleScopeOf(err) != connection.ThrottleNone {
					t.Errorf("a refresh held back by the pause starts a pause of its own: %v", err)
				}
			}
			for err := range exchangeErrs {
				if err != nil {
					t.Fatalf("code exchange during the pause = %v, want it sent and successful", err)
				}
			}
			if n := srv.count.Load(); n != 11 {
				t.Fatalf("requests during the pause = %d, want 11 (the throttled one and the 10 exchanges)", n)
			}

			clk.Advance(remaining)
			if _, err := c.Refresh(context.Background(), "rt"); err != nil {
				t.Fatalf("Refresh after the pause = %v", err)
			}
			if n := srv.count.Load(); n != 12 {
				t.Errorf("requests = %d, want 12", n)
			}
		})
	}
	t.Run("AADSTS50196 pauses nothing here: it concerns one connection", func(t *testing.T) {
		var calls atomic.Int32
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				writeJSONBody(w, 400, []byte(bodyInvalidGrant50196))
				return
			}
			writeJSONBody(w, 200, tokenJSON(t, nil))
		})
		logs := &logtest.Buffer{}
		c := newTestClient(t, srv.URL, withLogger(zerolog.New(logs)))
		_, err := c.Refresh(context.Background(), "rt-of-a")
		if connection.ThrottleScopeOf(err) != connection.ThrottleConnection || connection.ClassOf(err) != connection.ClassTransient {
			t.Fatalf("50196 = %v, want transient with connection scope", err)
		}
		if ra, _ := connection.RetryAfterOf(err); ra != defaultThrottlePause {
			t.Errorf("50196 RetryAfter = %v, want the default %v", ra, defaultThrottlePause)
		}
		if errors.Is(err, connection.ErrPaused) {
			t.Error("the 50196 answer itself says it was not sent")
		}
		// The next user's refresh goes out at once.
		if _, err := c.Refresh(context.Background(), "rt-of-c"); err != nil {
			t.Fatalf("another refresh after a 50196 = %v, want it sent", err)
		}
		if len(logs.Events("throttled")) != 0 {
			t.Errorf("msidentity logged throttled without the user_id: %s", logs)
		}
	})
	t.Run("AADSTS50196 with Retry-After keeps Microsoft's delay", func(t *testing.T) {
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "17")
			writeJSONBody(w, 400, []byte(bodyInvalidGrant50196))
		})
		c := newTestClient(t, srv.URL)
		_, err := c.Refresh(context.Background(), "rt")
		if ra, _ := connection.RetryAfterOf(err); ra != 17*time.Second || connection.ThrottleScopeOf(err) != connection.ThrottleConnection {
			t.Errorf("50196 with Retry-After 17 = %v (RetryAfter %v)", err, ra)
		}
	})
	t.Run("a 503 with Retry-After pauses nothing", func(t *testing.T) {
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "30")
			writeJSONBody(w, 503, []byte(bodyTemporarily))
		})
		c := newTestClient(t, srv.URL)
		for range 2 {
			if _, err := c.Refresh(context.Background(), "rt"); errors.Is(err, connection.ErrPaused) {
				t.Fatalf("refresh after a 503 was held back: %v", err)
			}
		}
		if n := srv.count.Load(); n != 2 {
			t.Errorf("requests = %d, want 2", n)
		}
	})
	t.Run("Retry-After 0 does not pause", func(t *testing.T) {
		srv := newStandIn(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "0")
			writeJSONBody(w, 429, []byte(bodyTemporarily))
		})
		c := newTestClient(t, srv.URL)
		for range 2 {
			_, _ = c.Refresh(context.Background(), "rt")
		}
		if n := srv.count.Load(); n != 2 {
			t.Errorf("requests = %d, want 2", n)
		}
	})
	t.Run("a longer pause is not shortened by a shorter one", func(t *testing.T) {
		clk := newClock()
		c := newTestClient(t, "http://127.0.0.1:1", withClock(clk))
		c.observe(&Error{HTTPStatus: 429, Delay: time.Minute, retryAfterSent: true})
		c.observe(&Error{HTTPStatus: 429, Delay: time.Second, retryAfterSent: true})
		if got := c.paused(); got != time.Minute {
			t.Errorf("paused = %v, want 1m", got)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"", 0, false},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{"99999999999999999999", maxRetryAfter, true},
		{"86400", maxRetryAfter, true},
		{"Wed, 25 Nov 2026 23:31:00 GMT", time.Minute, true},
		{"Wed, 25 Nov 2026 23:00:00 GMT", 0, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"1.5", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestClassify(t *testing.T) {
	R, C, T := connection.ClassReconnectRequired, connection.ClassConfiguration, connection.ClassTransient
	tests := []struct {
		status int
		code   string
		codes  []int
		want   connection.Class
	}{
		{400, "invalid_grant", nil, R},
		{400, "invalid_grant", []int{12345}, R},
		{400, "invalid_grant", []int{70008}, R},
		{400, "invalid_grant", []int{50173}, R},
		{400, "invalid_grant", []int{9002313}, R},
		{400, "invalid_grant", []int{50196}, T},
		{400, "invalid_grant", []int{700082, 50196}, T},
		{400, "invalid_grant", []int{501481}, C},
		{400, "invalid_grant", []int{54005}, C},
		{400, "invalid_grant", []int{700005}, C},
		{400, "interaction_required", []int{53003}, R},
		{400, "interaction_required", []int{530032}, R},
		{400, "invalid_request", []int{90009}, C},
		{400, "invalid_request", []int{9002313}, C}, // never blame the user for our malformed request
		{400, "invalid_request", []int{90024}, T},
		{400, "invalid_scope", []int{70011}, C},
		{401, "invalid_client", []int{7000222}, C},
		{401, "invalid_client", []int{65001}, C},
		{400, "some_new_error", nil, C},
		{400, "some_new_error", []int{700082}, R},
		{500, "invalid_grant", []int{700082}, T},
		{503, "", nil, T},
		{429, "invalid_client", nil, T},
		{0, CodeNetworkError, nil, T},
		{0, CodeThrottled, nil, T},
		{200, CodeInvalidResponse, nil, T},
		{404, CodeInvalidResponse, nil, C},
		{0, "invalid_grant", []int{70000}, R},
	}
	for _, tt := range tests {
		if got := classify(tt.status, tt.code, tt.codes); got != tt.want {
			t.Errorf("classify(%d, %q, %v) = %v, want %v", tt.status, tt.code, tt.codes, got, tt.want)
		}
	}
}

func TestErrorLogFieldsOmitDescription(t *testing.T) {
	logs := &logtest.Buffer{}
	e := responseError(opRefresh, 400, http.Header{}, []byte(bodyInvalidGrant700082), time.Now())
	log := zerolog.New(logs)
	log.Error().Str("event", "x").EmbedObject(e).Msg("m")
	line := logs.String()
	for _, want := range []string{`"code":"invalid_grant"`, `"error_codes":[700082]`, `"trace_id":"0b7e1c1a-6f1d-4b7e-9c57-2a1d0e6f3b00"`, `"correlation_id":"7c1b2d3e-0000-4000-8000-000000000001"`, `"suberror":"bad_token"`, `"op":"refresh"`, `"http_status":400`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s lacks %s", line, want)
		}
	}
	if strings.Contains(line, "inactivity") {
		t.Errorf("log line carries the description: %s", line)
	}
}
