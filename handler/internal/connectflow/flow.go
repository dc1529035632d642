// Package connectflow owns the connect flow: single-use connect sessions for
// a CMS user, the PKCE verifier and a state bound to the browser, the
// return-URL allowlist, the callback that turns a code into a pending
// connect, and the CMS's completion that turns a pending connect into a
// stored connection for the user it was started for, and only for them. It knows nothing of net/http or Microsoft's wire format: the
// httpapi package adapts requests, and the Identity interface hides
// Microsoft.
package connectflow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/megdocs/msconnector/handler/internal/connection"
)

// Lifetimes. Microsoft's codes live about 10 minutes; our links no longer.
const (
	SessionTTL = 10 * time.Minute
	StateTTL   = 10 * time.Minute
	// ConnectTTL is how long a signed-in result waits for the CMS to
	// complete it (contract: codes live 10 minutes).
	ConnectTTL = 10 * time.Minute
)

// Identity is the part of Microsoft the flow needs.
type Identity interface {
	AuthCodeURL(state, verifier, loginHint string) string
	Exchange(ctx context.Context, code, verifier string) (connection.Grant, error)
	// Profile reads Graph /me with the new access token: Email and
	// DisplayName are filled; ID/TenantID come from the id_token.
	Profile(ctx context.Context, accessToken string) (connection.Account, error)
}

// serverError is implemented by Exchange errors that are not the
// exchange's fault: the code was never judged because something the check
// depends on failed (Microsoft's discovery document could not be read).
// The callback then answers server_error, not exchange_failed.
type serverError interface {
	error
	ServerError() bool
}

// Service runs the connect flow. Safe for concurrent use.
type Service struct {
	Store     connection.Store
	Pending   connection.PendingStore
	Identity  Identity
	Allowlist *Allowlist
	Events    connection.Publisher
	// PublicBaseURL prefixes connect_url (no trailing slash).
	PublicBaseURL string
	Log           zerolog.Logger
	// Now is the clock, required (time.Now in production).
	Now  func() time.Time
	Rand io.Reader // crypto/rand when nil
}

// Errors the flow returns; each carries its contract code.
var (
	// ErrLinkInvalid: the connect link is unknown, used or expired.
	ErrLinkInvalid = &connection.Error{Code: connection.ELinkInvalid, Message: "connectflow: connect link is unknown, used or expired"}
	// ErrStateInvalid: the callback's state is unknown, used, expired or
	// not this browser's.
	ErrStateInvalid = &connection.Error{Code: connection.EStateInvalid, Message: "connectflow: state is unknown, used, expired or not bound to this browser"}
	// ErrConnectCodeInvalid: the connect code is unknown, spent or expired
	// (400 invalid_connect_code). Nothing was changed.
	ErrConnectCodeInvalid = &connection.Error{Code: connection.EConnectCodeInvalid, Message: "the connect code is unknown, already used or expired: start connecting again"}
	// ErrUserMismatch: the connect code was issued for another CMS user
	// (409 user_mismatch). The code is spent and the signed-in result
	// destroyed.
	ErrUserMismatch = &connection.Error{Code: connection.EUserMismatch, Message: "this sign-in was started for another user; nothing was connected"}
)

// SessionRequest is the CMS's POST /api/connect-sessions body.
type SessionRequest struct {
	UserID    string
	ReturnURL string
	LoginHint string
}

// Session is what the CMS gets back.
type Session struct {
	ConnectURL string
	ExpiresAt  time.Time
}

// validUserID applies the contract's user_id rule (connection.ValidUserID),
// whose refusal is the CMS's 400 invalid_request.
func validUserID(id string) error {
	if err := connection.ValidUserID(id); err != nil {
		return fmt.Errorf("connectflow: %w", err)
	}
	return nil
}

// CreateSession starts a connect flow for one CMS user.
func (s *Service) CreateSession(ctx context.Context, req SessionRequest) (Session, error) {
	if err := validUserID(req.UserID); err != nil {
		return Session{}, err
	}
	if req.ReturnURL == "" {
		return Session{}, connection.Errorf(connection.EInvalid, "return_url is required")
	}
	if !s.Allowlist.Allowed(req.ReturnURL) {
		return Session{}, connection.Errorf(connection.EReturnURLNotAllowed, "return_url does not start with an allowed prefix (ALLOWED_RETURN_URLS)")
	}
	if len(req.LoginHint) > 320 || strings.ContainsFunc(req.LoginHint, func(r rune) bool { return r < 0x20 || r == 0x7f }) || !utf8.ValidString(req.LoginHint) {
		return Session{}, connection.Errorf(connection.EInvalid, "login_hint must be at most 320 bytes of text")
	}
	now := s.now()
	p := connection.Pending{
		Kind: connection.PendingSession, UserID: req.UserID,
		ReturnURL: req.ReturnURL, LoginHint: req.LoginHint,
		CreatedAt: now, ExpiresAt: now.Add(SessionTTL),
	}
	token, err := s.putNew(ctx, p)
	if err != nil {
		return Session{}, fmt.Errorf("connectflow: store session: %w", err)
	}
	s.Log.Info().Str("event", "connect_session_created").Str("user_id", req.UserID).Msg("connect session created")
	return Session{
		ConnectURL: s.PublicBaseURL + "/api/connect?session=" + url.QueryEscape(token),
		ExpiresAt:  p.ExpiresAt,
	}, nil
}

// Begin is what the browser's GET /api/connect does.
type Begin struct {
	AuthURL string
	// Cookie is the browser-binding secret to set as the state cookie.
	Cookie    string
	ExpiresAt time.Time
}

// BeginConnect consumes the connect session (exactly once, even when two
// requests race for it) and prepares Microsoft's authorize URL with a fresh
// state and PKCE verifier.
func (s *Service) BeginConnect(ctx context.Context, sessionToken string) (Begin, error) {
	id, ok := hashToken(sessionToken)
	if !ok {
		return Begin{}, ErrLinkInvalid
	}
	sess, err := s.Pending.GetPending(ctx, connection.PendingSession, id)
	if errors.Is(err, connection.ErrNotFound) {
		return Begin{}, ErrLinkInvalid
	}
	if err != nil {
		return Begin{}, fmt.Errorf("connectflow: read session: %w", err)
	}
	now := s.now()
	if sess.Used || !now.Before(sess.ExpiresAt) {
		return Begin{}, ErrLinkInvalid
	}
	if err := s.Pending.MarkUsed(ctx, sess); err != nil {
		if errors.Is(err, connection.ErrConflict) || errors.Is(err, connection.ErrNotFound) {
			return Begin{}, ErrLinkInvalid // another request won the race
		}
		return Begin{}, fmt.Errorf("connectflow: use session: %w", err)
	}

	cookie, cookieHash, err := s.newToken()
	if err != nil {
		return Begin{}, err
	}
	verifier, _, err := s.newToken() // 43 chars of base64url: RFC 7636 §4.1
	if err != nil {
		return Begin{}, err
	}
	st := connection.Pending{
		Kind: connection.PendingState, UserID: sess.UserID,
		ReturnURL: sess.ReturnURL, LoginHint: sess.LoginHint, Verifier: verifier,
		BrowserHash: cookieHash, CreatedAt: now, ExpiresAt: now.Add(StateTTL),
	}
	state, err := s.putNew(ctx, st)
	if err != nil {
		return Begin{}, fmt.Errorf("connectflow: store state: %w", err)
	}
	s.Log.Info().Str("event", "connect_started").Str("user_id", sess.UserID).Msg("sending the browser to Microsoft")
	return Begin{AuthURL: s.Identity.AuthCodeURL(state, verifier, sess.LoginHint), Cookie: cookie, ExpiresAt: st.ExpiresAt}, nil
}

// Callback is what Microsoft sent back, plus the browser's state cookie.
type Callback struct {
	Code, State, Error, ErrorDescription string
	Cookie                               string
}

// Reasons the CMS may see on microsoft=error (contract).
const (
	ReasonAccessDenied    = "access_denied"
	ReasonConsentRequired = "consent_required"
	ReasonExchangeFailed  = "exchange_failed"
	ReasonServerError     = "server_error"
)

// HandleCallback validates the state against the browser's cookie, consumes
// it, exchanges the code, reads the account and keeps the signed-in result
// as a pending connect under a fresh connect code. It returns where to send
// the browser: return_url with microsoft=signed_in&connect_code=... (or
// microsoft=error&reason=...). No connection changes and no event is sent:
// only the CMS's completion (Complete) connects, for the CMS user logged in
// in the browser that comes back, which is what stops a leaked connect
// link from binding the wrong Microsoft account. ErrStateInvalid means: 400
// page, no redirect, nothing stored.
func (s *Service) HandleCallback(ctx context.Context, cb Callback) (string, error) {
	st, err := s.takeState(ctx, cb)
	if err != nil {
		return "", err
	}
	log := s.Log.With().Str("user_id", st.UserID).Logger()
	fail := func(reason string, err error, fields func(*zerolog.Event) *zerolog.Event) (string, error) {
		ev := log.Warn().Str("event", "oauth_failed").Str("reason", reason)
		if fields != nil {
			ev = fields(ev)
		}
		if err != nil {
			ev = ev.AnErr("error", err)
		}
		ev.Msg("connect failed")
		return withResult(st.ReturnURL, url.Values{"microsoft": {"error"}, "reason": {reason}}), nil
	}

	if cb.Error != "" {
		reason := ReasonServerError
		switch cb.Error {
		case "access_denied":
			reason = ReasonAccessDenied
		case "consent_required", "interaction_required":
			reason = ReasonConsentRequired
		}
		return fail(reason, nil, func(e *zerolog.Event) *zerolog.Event {
			// error is one of RFC 6749's codes; the description may name
			// the user, so only the code is logged.
			return e.Str("code", truncate(cb.Error, 64))
		})
	}
	if cb.Code == "" {
		return fail(ReasonServerError, errors.New("callback has neither code nor error"), nil)
	}

	grant, err := s.Identity.Exchange(ctx, cb.Code, st.Verifier)
	if err != nil {
		reason := ReasonExchangeFailed
		var se serverError
		switch {
		case errors.As(err, &se) && se.ServerError():
			reason = ReasonServerError
		case connection.CodeOf(err, "") == "consent_required" || connection.CodeOf(err, "") == "interaction_required":
			reason = ReasonConsentRequired
		}
		return fail(reason, err, func(e *zerolog.Event) *zerolog.Event {
			return e.Str("class", connection.ClassOf(err).String()).Str("code", connection.CodeOf(err, "exchange_failed"))
		})
	}
	acct, err := s.Identity.Profile(ctx, grant.AccessToken)
	if err != nil {
		return fail(ReasonServerError, err, nil)
	}
	acct.ID, acct.TenantID = grant.Account.ID, grant.Account.TenantID

	if grant.RefreshToken == "" {
		return fail(ReasonExchangeFailed, errors.New("Microsoft returned no refresh token: is offline_access among MICROSOFT_SCOPES?"), nil)
	}
	now := s.now()
	pc := connection.Pending{
		Kind: connection.PendingConnect, UserID: st.UserID,
		Grant: connection.Grant{
			AccessToken: grant.AccessToken, RefreshToken: grant.RefreshToken, ExpiresAt: grant.ExpiresAt,
			Scopes: connection.NormalizeScopes(grant.Scopes, true), Account: acct,
		},
		CreatedAt: now, ExpiresAt: now.Add(ConnectTTL),
	}
	code, err := s.putNew(ctx, pc)
	if err != nil {
		return fail(ReasonServerError, err, nil)
	}
	log.Info().Str("event", "signed_in").Str("account_id", acct.ID).Str("tenant_id", acct.TenantID).Msg("signed in; waiting for the CMS to complete the connect")
	return withResult(st.ReturnURL, url.Values{"microsoft": {"signed_in"}, "connect_code": {code}}), nil
}

// presented reads the pending entry of kind that a token presented by a
// browser or the CMS (a state, a connect code) names: we store only its
// hash. A malformed token, or one naming no entry, is invalid.
func (s *Service) presented(ctx context.Context, kind connection.PendingKind, token string, invalid error) (connection.Pending, error) {
	id, ok := hashToken(token)
	if !ok {
		return connection.Pending{}, invalid
	}
	p, err := s.Pending.GetPending(ctx, kind, id)
	if errors.Is(err, connection.ErrNotFound) {
		return connection.Pending{}, invalid
	}
	if err != nil {
		return connection.Pending{}, fmt.Errorf("connectflow: read pending %s: %w", kind, err)
	}
	return p, nil
}

// takeState checks the state and the browser's cookie BEFORE consuming it,
// so a request without the right cookie cannot burn the user's state.
func (s *Service) takeState(ctx context.Context, cb Callback) (connection.Pending, error) {
	st, err := s.presented(ctx, connection.PendingState, cb.State, ErrStateInvalid)
	if err != nil {
		return connection.Pending{}, err
	}
	cookieHash, ok := hashToken(cb.Cookie)
	if !ok || !constantTimeEqual(cookieHash, st.BrowserHash) || st.Used || !s.now().Before(st.ExpiresAt) {
		return connection.Pending{}, ErrStateInvalid
	}
	if err := s.Pending.MarkUsed(ctx, st); err != nil {
		if errors.Is(err, connection.ErrConflict) || errors.Is(err, connection.ErrNotFound) {
			return connection.Pending{}, ErrStateInvalid
		}
		return connection.Pending{}, fmt.Errorf("connectflow: use state: %w", err)
	}
	return st, nil
}

// Complete finishes a connect for the CMS user userID with the connect
// code the callback added to return_url, and returns the stored
// connection. The code must have been issued for userID: for anyone else
// the code is spent and the signed-in result destroyed (ErrUserMismatch),
// so nothing is stored for either user. An unknown, spent or expired code
// is ErrConnectCodeInvalid; an invalid userID an invalid_request *connection.Error.
//
// Order, and what a crash at each point leaves:
//  1. read the pending connect (nothing changes);
//  2. spend it: delete the row, conditional on the ETag just read. Of any
//     number of racing calls exactly one gets past this point, and the
//     tokens leave the table;
//  3. store the connection (ETag-conditional create or replace) and its
//     event in one transaction (the outbox), then enqueue the event; a
//     crash after the store leaves the event to the sweep.
//
// A process that dies between 2 and 3 loses this one sign-in: the code is
// spent, the user's status is exactly as it was (not connected, or the
// earlier connection untouched), and the user connects again. Nothing is
// ever doubly used. The other order (store, then spend) cannot keep the
// contract: two racing calls would both store, and a mismatched call
// spending the code after the right user's store would leave a connection
// that the contract says the mismatch destroyed. A lost sign-in is the
// recoverable failure; a connection the code did not authorize is not.
func (s *Service) Complete(ctx context.Context, userID, connectCode string) (connection.Connection, error) {
	if err := validUserID(userID); err != nil {
		return connection.Connection{}, err
	}
	pc, err := s.presented(ctx, connection.PendingConnect, connectCode, ErrConnectCodeInvalid)
	if err != nil {
		return connection.Connection{}, err
	}
	now := s.now()
	if !now.Before(pc.ExpiresAt) {
		return connection.Connection{}, ErrConnectCodeInvalid // the sweep deletes it
	}
	if err := s.Pending.DeletePending(ctx, pc); err != nil {
		if errors.Is(err, connection.ErrConflict) || errors.Is(err, connection.ErrNotFound) {
			return connection.Connection{}, ErrConnectCodeInvalid // another call spent it first
		}
		return connection.Connection{}, fmt.Errorf("connectflow: spend connect code: %w", err)
	}
	if pc.UserID != userID {
		// Someone else's browser came back with this code: whoever signed
		// in, it was not for this CMS user. The result is gone (deleted
		// above); a security event worth an alert.
		s.Log.Warn().Str("event", "oauth_failed").Str("reason", "user_mismatch").
			Str("user_id", userID).Str("started_by", pc.UserID).
			Str("account_id", pc.Grant.Account.ID).Str("tenant_id", pc.Grant.Account.TenantID).
			Msg("connect completed by another CMS user than the one who started it; nothing connected")
		return connection.Connection{}, ErrUserMismatch
	}
	g := pc.Grant
	c := connection.Connection{
		UserID: userID, Status: connection.StatusConnected, Account: g.Account, Scopes: g.Scopes,
		AccessToken: g.AccessToken, RefreshToken: g.RefreshToken, AccessTokenExpiresAt: g.ExpiresAt,
		ConnectedAt: now, LastRefreshedAt: now, LastUsedAt: now,
	}
	acct := c.Account
	// The event is stored with the connection (the outbox), so it is as
	// durable as the change; its type depends on the status replaced.
	event := func(previous connection.Status) *connection.OutboxEntry {
		typ := connection.EventConnected
		if previous == connection.StatusReconnectRequired {
			typ = connection.EventRecovered
		}
		return s.Events.Prepare(connection.Event{Type: typ, UserID: userID, At: now, Account: &acct})
	}
	c, ev, err := s.save(ctx, c, event)
	if err != nil {
		// The code was spent but the connection could not be stored: put
		// the signed-in result back as it was (same code, same expiry),
		// so the CMS's retry with the same code can still finish it. Only
		// the user it was issued for gets here. Should the put-back fail
		// too (or the process die before it), the sign-in is lost and the
		// user connects again; the code can never be used twice either way.
		if perr := s.Pending.PutPending(context.WithoutCancel(ctx), pc.Unstored()); perr != nil {
			s.Log.Warn().Str("event", "connect_restore_failed").Str("user_id", userID).Err(perr).
				Msg("could not keep the signed-in result after a failed store; the user must connect again")
		}
		return connection.Connection{}, err
	}
	// Stored with its event: enqueue it now. A failure is logged by the
	// publisher and left to the sweep; the connection is stored either way.
	s.Events.Send(ctx, ev)
	s.Log.Info().Str("event", "connected").Str("user_id", userID).Str("account_id", acct.ID).Str("tenant_id", acct.TenantID).Msg("connection stored")
	return c, nil
}

// save creates or replaces the user's connection, conditional on the ETag,
// together with the outbox entry event makes for the status it replaces
// ("" when new), and returns both as stored. It reads with Peek: replacing
// needs only the ETag and status, not the old tokens (nor the key that
// sealed them).
func (s *Service) save(ctx context.Context, c connection.Connection, event func(previous connection.Status) *connection.OutboxEntry) (connection.Connection, *connection.OutboxEntry, error) {
	for attempt := 0; attempt < 5; attempt++ {
		old, err := s.Store.Peek(ctx, c.UserID)
		switch {
		case errors.Is(err, connection.ErrNotFound):
			c.ETag = ""
			ev := event("")
			if stored, err := s.Store.CreateWithEvent(ctx, c, ev); err == nil {
				return stored, ev, nil
			} else if !errors.Is(err, connection.ErrConflict) {
				return c, nil, fmt.Errorf("connectflow: create connection: %w", err)
			}
		case err != nil:
			return c, nil, fmt.Errorf("connectflow: read connection: %w", err)
		default:
			c.ETag = old.ETag
			ev := event(old.Status)
			if stored, err := s.Store.UpdateWithEvent(ctx, c, ev); err == nil {
				return stored, ev, nil
			} else if !errors.Is(err, connection.ErrConflict) && !errors.Is(err, connection.ErrNotFound) {
				return c, nil, fmt.Errorf("connectflow: update connection: %w", err)
			}
		}
		// Someone wrote in between (a sweep, another tab): read again.
	}
	return c, nil, fmt.Errorf("connectflow: save connection: %w", connection.ErrConflict)
}

// putNew stores p under a fresh bearer token and returns the token. The
// store's insert is retried by the Table SDK after a timeout, so an insert
// that landed can come back as a conflict; an ID of 256 random bits cannot
// be anyone else's, so that conflict means our own write: store the entry
// again under a new token (the orphan expires unused and the sweep deletes
// it) rather than fail a request that succeeded.
func (s *Service) putNew(ctx context.Context, p connection.Pending) (string, error) {
	for attempt := 1; ; attempt++ {
		token, id, err := s.newToken()
		if err != nil {
			return "", err
		}
		p.ID = id
		err = s.Pending.PutPending(ctx, p)
		if err == nil {
			return token, nil
		}
		if !errors.Is(err, connection.ErrConflict) || attempt == 3 {
			return "", err
		}
	}
}

// newToken returns a bearer token with 256 bits of randomness and the hex
// SHA-256 under which it is stored: the store never sees the token.
func (s *Service) newToken() (token, id string, err error) {
	r := s.Rand
	if r == nil {
		r = rand.Reader
	}
	b := make([]byte, 32)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", "", fmt.Errorf("connectflow: randomness: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	id, _ = hashToken(token)
	return token, id, nil
}

// hashToken hashes a token the browser brought back; malformed tokens are
// rejected before any store access.
func hashToken(token string) (string, bool) {
	if len(token) != 43 {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(token); err != nil {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]), true
}

func (s *Service) now() time.Time { return s.Now().UTC() }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
