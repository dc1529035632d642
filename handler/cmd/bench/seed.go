//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/megdocs/msconnector/handler/internal/connection"
	"github.com/megdocs/msconnector/handler/internal/devidp"
	"github.com/megdocs/msconnector/handler/internal/msidentity"
	"github.com/megdocs/msconnector/handler/internal/parallel"
	"github.com/megdocs/msconnector/handler/internal/tablestore"
)

// A seeded connection's grant comes from the stand-in's real authorization
// code flow, the one a user's browser goes through: authorize URL (PKCE
// S256) built by the product's msidentity client, the stand-in's sign-in,
// and the code redeemed by msidentity.Exchange. So every refresh token is
// one the stand-in issued and still accepts; nothing is forged.
//
// The stand-in, like Microsoft, keeps a refresh token valid after it
// rotates (redeeming one does not revoke it), so one code flow per user
// serves every case: each case stores the grants in a fresh table and the
// sweep redeems them again.

// signIns runs n code flows with workers in parallel, cycling over the
// stand-in's test accounts (each flow is a separate sign-in with its own
// chain of refresh tokens, as two CMS users connecting the same Microsoft
// account would be).
func signIns(ctx context.Context, n, workers int, idp *devidp.Server, ms *msidentity.Client, hc *http.Client) ([]msidentity.Tokens, error) {
	accounts := idp.Accounts()
	grants := make([]msidentity.Tokens, n)
	err := parallel.For(ctx, n, workers, func(ctx context.Context, i int) error {
		a := accounts[i%len(accounts)]
		verifier, state := randomString(32), randomString(16)
		loc, err := idp.SignIn(ctx, hc, ms.AuthCodeURL(state, verifier, a.UserPrincipalName), a.UserPrincipalName)
		if err != nil {
			return err
		}
		q := loc.Query()
		if q.Get("state") != state || q.Get("code") == "" {
			return fmt.Errorf("sign-in %d: stand-in redirected to %s", i, loc.Redacted())
		}
		tok, err := ms.Exchange(ctx, q.Get("code"), verifier)
		if err != nil {
			return fmt.Errorf("sign-in %d: %w", i, err)
		}
		if tok.RefreshToken == "" {
			return fmt.Errorf("sign-in %d: no refresh token (offline_access missing?)", i)
		}
		tok.Account.Email, tok.Account.DisplayName = a.UserPrincipalName, a.DisplayName
		grants[i] = tok
		return nil
	})
	return grants, err
}

// userID is the CMS user of the i-th seeded connection: CMS ids are decimal.
func userID(i int) string { return strconv.Itoa(100001 + i) }

// resetTable drops the connections table and creates it empty, so a case
// starts from exactly its own rows.
func resetTable(ctx context.Context, svc *aztables.ServiceClient, name string) error {
	if _, err := svc.DeleteTable(ctx, name, nil); err != nil {
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			return fmt.Errorf("delete table %s: %w", name, err)
		}
	}
	if _, err := svc.CreateTable(ctx, name, nil); err != nil {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	return nil
}

// storeDue writes one row per grant through the product's table store
// (sealed with the real keyring), every one due for the sweep: connected a
// month ago, last refreshed 25 hours ago (REFRESH_MAX_AGE is 24 hours),
// its access token long expired, as a connection nobody used since
// yesterday's sweep looks.
func storeDue(ctx context.Context, store *tablestore.Store, grants []msidentity.Tokens, workers int, now time.Time) error {
	last := now.Add(-25 * time.Hour)
	return parallel.For(ctx, len(grants), workers, func(ctx context.Context, i int) error {
		g := grants[i]
		_, err := store.Create(ctx, connection.Connection{
			UserID: userID(i), Status: connection.StatusConnected, Account: g.Account, Scopes: g.Scopes,
			AccessToken: g.AccessToken, RefreshToken: g.RefreshToken,
			AccessTokenExpiresAt: last.Add(time.Hour),
			ConnectedAt:          now.Add(-30 * 24 * time.Hour),
			LastRefreshedAt:      last,
			LastUsedAt:           last,
		})
		return err
	})
}

// storeFresh writes one row per grant as the connect completion stores a connection
// it has just made: the code flow's own tokens and expiry, connected and
// refreshed at sign-in, never used yet. None is due for the token API (the
// access tokens live an hour; the margin is 5 minutes).
func storeFresh(ctx context.Context, store *tablestore.Store, grants []msidentity.Tokens, workers int, signedIn time.Time) error {
	return parallel.For(ctx, len(grants), workers, func(ctx context.Context, i int) error {
		g := grants[i]
		_, err := store.Create(ctx, connection.Connection{
			UserID: userID(i), Status: connection.StatusConnected, Account: g.Account, Scopes: g.Scopes,
			AccessToken: g.AccessToken, RefreshToken: g.RefreshToken, AccessTokenExpiresAt: g.ExpiresAt,
			ConnectedAt: signedIn, LastRefreshedAt: signedIn,
		})
		return err
	})
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux (Go aborts instead)
	return base64.RawURLEncoding.EncodeToString(b)
}
