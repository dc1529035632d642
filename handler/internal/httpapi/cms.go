package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/megdocs/msconnector/handler/internal/connectflow"
	"github.com/megdocs/msconnector/handler/internal/connection"
)

// decodeBody reads one JSON object of at most MaxBody bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		return bodyError(err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &connection.Error{Code: connection.EInvalid, Message: "the body is not a JSON object of the documented shape", Err: err}
	}
	return nil
}

type sessionRequest struct {
	UserID    *string `json:"user_id"`
	ReturnURL *string `json:"return_url"`
	LoginHint *string `json:"login_hint"`
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var req sessionRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.UserID == nil || req.ReturnURL == nil {
		s.writeError(w, r, connection.Errorf(connection.EInvalid, "user_id and return_url are required strings"))
		return
	}
	in := connectflow.SessionRequest{UserID: *req.UserID, ReturnURL: *req.ReturnURL}
	if req.LoginHint != nil {
		in.LoginHint = *req.LoginHint
	}
	sess, err := s.Flow.CreateSession(r.Context(), in)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"connect_url": sess.ConnectURL,
		"expires_at":  formatTime(sess.ExpiresAt),
	})
}

// statusObject is the contract's connection status: never a token.
type statusObject struct {
	UserID               string       `json:"user_id"`
	Status               string       `json:"status"`
	Account              accountJSON  `json:"account"`
	Scopes               []string     `json:"scopes"`
	AccessTokenExpiresAt *string      `json:"access_token_expires_at"`
	ConnectedAt          *string      `json:"connected_at"`
	LastRefreshedAt      *string      `json:"last_refreshed_at"`
	LastError            *errorObject `json:"last_error"`
}

type accountJSON struct {
	ID          string `json:"id"`
	TenantID    string `json:"tenant_id"`
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
}

type errorObject struct {
	Code string `json:"code"`
	At   string `json:"at"`
}

func toStatus(c connection.Connection) statusObject {
	o := statusObject{
		UserID: c.UserID, Status: string(c.Status),
		Account:              accountJSON{ID: c.Account.ID, TenantID: c.Account.TenantID, Email: c.Account.Email, DisplayName: c.Account.DisplayName},
		Scopes:               c.Scopes,
		AccessTokenExpiresAt: optTime(c.AccessTokenExpiresAt),
		ConnectedAt:          optTime(c.ConnectedAt),
		LastRefreshedAt:      optTime(c.LastRefreshedAt),
	}
	if o.Scopes == nil {
		o.Scopes = []string{}
	}
	if c.LastError != nil {
		o.LastError = &errorObject{Code: c.LastError.Code, At: formatTime(c.LastError.At)}
	}
	return o
}

// userID reads and validates the path's {user_id} (already unescaped by
// the host and the mux) with the contract's one rule: any other id is 400
// invalid_request (connection.ErrInvalidUserID) before anything is read or
// stored.
func userID(r *http.Request) (string, error) {
	id := r.PathValue("user_id")
	if err := connection.ValidUserID(id); err != nil {
		return "", err
	}
	return id, nil
}

type completeRequest struct {
	ConnectCode *string `json:"connect_code"`
}

// complete finishes a connect for the CMS user in the path, who must be
// the user logged in in the browser that brought the connect code back.
func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	id, err := userID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req completeRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.ConnectCode == nil {
		s.writeError(w, r, connection.Errorf(connection.EInvalid, "connect_code is a required string"))
		return
	}
	c, err := s.Flow.Complete(r.Context(), id, *req.ConnectCode)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toStatus(c))
}

func (s *Server) getConnection(w http.ResponseWriter, r *http.Request) {
	id, err := userID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Status never needs the tokens, nor the key that sealed them.
	c, err := s.Store.Peek(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toStatus(c))
}

func (s *Server) deleteConnection(w http.ResponseWriter, r *http.Request) {
	id, err := userID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// Disconnecting must work even when the tokens cannot be opened.
	old, getErr := s.Store.Peek(r.Context(), id)
	if getErr != nil && !errors.Is(getErr, connection.ErrNotFound) {
		s.writeError(w, r, getErr)
		return
	}
	var ev *connection.OutboxEntry
	if getErr == nil {
		acct := old.Account
		// The event is stored with the deletion (the outbox): as durable
		// as the change.
		ev = s.Events.Prepare(connection.Event{Type: connection.EventDisconnected, UserID: id, At: s.now(), Account: &acct})
	}
	switch err := s.Store.DeleteWithEvent(r.Context(), id, ev); {
	case errors.Is(err, connection.ErrNotFound):
		// Deleted by someone else since the read: their change, their
		// event; the connection is gone either way.
		ev = nil
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	if getErr == nil {
		// A failed enqueue is logged by the publisher and left to the
		// sweep; the deletion stands either way.
		s.Events.Send(r.Context(), ev)
		s.Log.Info().Str("event", "disconnected").Str("user_id", id).Msg("connection deleted")
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := connection.ListQuery{Limit: 100, Cursor: q.Get("cursor")}
	if v := q.Get("status"); v != "" {
		if !connection.Status(v).Valid() {
			s.writeError(w, r, connection.Errorf(connection.EInvalid, "status must be connected or reconnect_required"))
			return
		}
		lq.Status = connection.Status(v)
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.writeError(w, r, connection.Errorf(connection.EInvalid, "limit must be a whole number from 1 to 1000"))
			return
		}
		lq.Limit = n
	}
	page, err := s.Store.List(r.Context(), lq)
	if err != nil { // connection.ErrBadCursor is 400 invalid_request
		s.writeError(w, r, err)
		return
	}
	out := struct {
		Connections []statusObject `json:"connections"`
		NextCursor  *string        `json:"next_cursor"`
	}{Connections: make([]statusObject, 0, len(page.Connections))}
	for _, c := range page.Connections {
		out.Connections = append(out.Connections, toStatus(c))
	}
	if page.NextCursor != "" {
		out.NextCursor = &page.NextCursor
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	id, err := userID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The body is optional and ignored, but still bounded.
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxBody)); err != nil {
		s.writeError(w, r, bodyError(err))
		return
	}
	t, err := s.Tokens.Token(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": t.AccessToken,
		"token_type":   "Bearer",
		"expires_at":   formatTime(t.ExpiresAt),
		"scope":        strings.Join(t.Scopes, " "),
	})
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func optTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := formatTime(t)
	return &s
}
