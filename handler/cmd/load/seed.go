//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devstack"
	"github.com/megdocs/msconnector/handler/internal/parallel"
	"github.com/megdocs/msconnector/handler/internal/sealing"
	"github.com/megdocs/msconnector/handler/internal/secrets"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// returnURL is within devstack's ALLOWED_RETURN_URLS when it runs without
// the demo CMS.
const returnURL = "http://localhost/settings/?tab=microsoft"

// userID is the i-th load user: every punctuation character contract v2
// allows (- . _ ~ @), so every request carries an id at the rule's edges.
func userID(i int) string { return fmt.Sprintf("load-%05d.u_s~er@x", i) }

// seed connects n users through the product's real connect flow on the
// seeding handler: POST /api/connect-sessions, the browser's GET of the
// connect link (state cookie), the stand-in's sign-in, the callback, which
// redeems the code with PKCE, reads Graph /me and keeps the result as a
// pending connect, and the CMS's POST /api/connections/{user_id}/complete,
// which stores the connection. Accounts cycle over the stand-in's test
// accounts.
func seed(ctx context.Context, stack *devstack.Stack, n, workers int) ([]string, error) {
	accounts := stack.IDP.Accounts()
	users := make([]string, n)
	hc := &http.Client{Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	err := parallel.For(ctx, n, workers, func(ctx context.Context, i int) error {
		id := userID(i)
		users[i] = id
		jar, _ := cookiejar.New(nil)
		browser := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: hc.Transport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		body, _ := json.Marshal(map[string]string{"user_id": id, "return_url": returnURL})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, stack.HandlerURL+"/api/connect-sessions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+stack.CMSKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := drain(resp.Body)
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("connect-sessions for %q: %d %s", id, resp.StatusCode, b)
		}
		var sess struct {
			ConnectURL string `json:"connect_url"`
		}
		if err := json.Unmarshal(b, &sess); err != nil {
			return err
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, sess.ConnectURL, nil)
		resp, err = browser.Do(req)
		if err != nil {
			return err
		}
		drain(resp.Body)
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("connect link for %q: %d", id, resp.StatusCode)
		}
		a := accounts[i%len(accounts)]
		cb, err := stack.IDP.SignIn(ctx, nil, resp.Header.Get("Location"), a.UserPrincipalName)
		if err != nil {
			return err
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, cb.String(), nil)
		resp, err = browser.Do(req)
		if err != nil {
			return err
		}
		drain(resp.Body)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("microsoft") != "signed_in" {
			return fmt.Errorf("callback for %q: %d %s", id, resp.StatusCode, resp.Header.Get("Location"))
		}
		body, _ = json.Marshal(map[string]string{"connect_code": loc.Query().Get("connect_code")})
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, stack.HandlerURL+"/api/connections/"+url.PathEscape(id)+"/complete", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+stack.CMSKey)
		req.Header.Set("Content-Type", "application/json")
		if resp, err = hc.Do(req); err != nil {
			return err
		}
		if b, _ = drain(resp.Body); resp.StatusCode != http.StatusOK {
			return fmt.Errorf("complete for %q: %d %s", id, resp.StatusCode, b)
		}
		return nil
	})
	return users, err
}

// dataCheck is what the load did to the stored connections.
type dataCheck struct {
	Stored, Connected int
	// Newest: the stored refresh token is the newest of its sign-in's
	// chain at the stand-in (no rotation lost). Accepted: a refresh with
	// it would succeed now.
	Newest, Accepted int
	Missing          []string
}

// checkData reads every seeded connection with its tokens, as the handler
// stores them (sealed with the stack's key), and asks the stand-in about
// its refresh token.
func checkData(ctx context.Context, stack *devstack.Stack, users []string) (dataCheck, error) {
	svc, err := aztables.NewServiceClientFromConnectionString(stack.Settings["TABLES_CONNECTION_STRING"], nil)
	if err != nil {
		return dataCheck{}, err
	}
	env := func(k string) string { return stack.Settings[k] }
	st := tablestore.New(svc, sealing.New(sealing.NewSecretKeyring(secrets.NewEnv(env))), tablestore.Options{Now: time.Now})
	var d dataCheck
	var mu sync.Mutex
	err = parallel.For(ctx, len(users), 16, func(ctx context.Context, i int) error {
		c, err := st.Get(ctx, users[i])
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(err, connection.ErrNotFound) {
			d.Missing = append(d.Missing, users[i])
			return nil
		}
		if err != nil {
			return err
		}
		d.Stored++
		if c.Status == connection.StatusConnected {
			d.Connected++
		}
		if stack.IDP.IsLatestRefreshToken(c.RefreshToken) {
			d.Newest++
		}
		if stack.IDP.IsRefreshTokenAccepted(c.RefreshToken) {
			d.Accepted++
		}
		return nil
	})
	return d, err
}
