// Command verify is `make verify`: it calls the connector's GET
// /api/diagnostics and prints the checks as a table (name, ok, detail,
// fix), exiting 1 when a check fails and 2 when it could not ask.
//
// Against Azure (FUNCTION_APP_NAME and KEY_VAULT_NAME, as infra/deploy.sh
// passes them, or -app and -vault) it reads the CMS key with `az keyvault
// secret show` into memory, never onto a command line or the screen, and
// calls https://<the app's default host name>/api/diagnostics. Against
// `make run` it uses VERIFY_BASE_URL and CMS_API_KEY, or else the file
// devrun leaves (.run/verify.json). Development and operations tooling:
// never packaged.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/megdocs/msconnector/handler/internal/diagnostics"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a check failed
	exitError  = 2 // could not ask (usage, az, network, 401, ...)
)

// cmsKeySecret is the Key Vault secret holding the CMS's Bearer key.
const cmsKeySecret = "cms-api-key"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, runAz, &http.Client{Timeout: 90 * time.Second}, os.Stdout, os.Stderr))
}

// azFunc runs the az CLI and returns its standard output.
type azFunc func(ctx context.Context, args ...string) ([]byte, error)

func runAz(ctx context.Context, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "az", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		// az's stderr says why (not logged in, no access); it never
		// holds the secret's value.
		return nil, fmt.Errorf("az %s: %w: %s", args[0]+" "+args[1], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

type target struct {
	url, key, where string
}

func run(ctx context.Context, args []string, getenv func(string) string, az azFunc, hc *http.Client, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("base-url", getenv("VERIFY_BASE_URL"), "the connector's base URL (env VERIFY_BASE_URL); default: the Azure app's, or make run's")
	app := fs.String("app", getenv("FUNCTION_APP_NAME"), "the Azure function app (env FUNCTION_APP_NAME)")
	group := fs.String("resource-group", getenv("RESOURCE_GROUP"), "its resource group (env RESOURCE_GROUP), to ask az for its host name")
	vault := fs.String("vault", getenv("KEY_VAULT_NAME"), "the Key Vault holding cms-api-key (env KEY_VAULT_NAME)")
	verifyFile := fs.String("verify-file", filepath.Join(".run", "verify.json"), "the file `make run` leaves with its URL and CMS key")
	wait := fs.Duration("wait", 2*time.Minute, "keep retrying this long while the app does not answer or answers 502/503/504 (a fresh deployment starting)")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	t, err := resolve(ctx, *baseURL, *app, *group, *vault, *verifyFile, getenv, az)
	if err != nil {
		fmt.Fprintln(stderr, "verify:", err)
		return exitError
	}
	fmt.Fprintf(stdout, "GET %s (%s)\n\n", t.url, t.where)
	rep, err := fetch(ctx, hc, t, *wait, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "verify:", err)
		return exitError
	}
	if err := diagnostics.WriteTable(stdout, rep); err != nil {
		return exitError
	}
	if !rep.OK {
		return exitFailed
	}
	return exitOK
}

// resolve finds the URL and the CMS key: Azure when an app is named, else
// VERIFY_BASE_URL + CMS_API_KEY, else make run's file.
func resolve(ctx context.Context, baseURL, app, group, vault, verifyFile string, getenv func(string) string, az azFunc) (target, error) {
	if app != "" {
		if vault == "" {
			return target{}, errors.New("KEY_VAULT_NAME (or -vault) is required with FUNCTION_APP_NAME: the CMS key is read from it")
		}
		out, err := az(ctx, "keyvault", "secret", "show", "--vault-name", vault, "--name", cmsKeySecret, "--query", "value", "--output", "tsv")
		if err != nil {
			return target{}, fmt.Errorf("read the CMS key from Key Vault %s: %w", vault, err)
		}
		key := strings.TrimSpace(string(out))
		if key == "" {
			return target{}, fmt.Errorf("Key Vault %s has no value for %s", vault, cmsKeySecret)
		}
		if baseURL == "" {
			host := app + ".azurewebsites.net"
			if group != "" {
				// The app's own answer: some apps get a unique default host
				// name instead of <app>.azurewebsites.net.
				out, err := az(ctx, "functionapp", "show", "--resource-group", group, "--name", app, "--query", "defaultHostName", "--output", "tsv")
				if err != nil {
					return target{}, fmt.Errorf("ask az for the app's host name: %w", err)
				}
				if h := strings.TrimSpace(string(out)); h != "" {
					host = h
				}
			}
			baseURL = "https://" + host
		}
		return target{url: strings.TrimRight(baseURL, "/") + "/api/diagnostics", key: key, where: "function app " + app + ", CMS key from Key Vault " + vault}, nil
	}
	if baseURL != "" {
		key := getenv("CMS_API_KEY")
		if key == "" {
			return target{}, errors.New("CMS_API_KEY is required with VERIFY_BASE_URL (make run prints it)")
		}
		return target{url: strings.TrimRight(baseURL, "/") + "/api/diagnostics", key: key, where: "CMS key from CMS_API_KEY"}, nil
	}
	b, err := os.ReadFile(verifyFile)
	if errors.Is(err, os.ErrNotExist) {
		return target{}, fmt.Errorf("nothing to verify: set FUNCTION_APP_NAME and KEY_VAULT_NAME (Azure), or VERIFY_BASE_URL and CMS_API_KEY, or start `make run` (it leaves %s)", verifyFile)
	}
	if err != nil {
		return target{}, err
	}
	var f struct {
		BaseURL   string `json:"base_url"`
		CMSAPIKey string `json:"cms_api_key"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.BaseURL == "" || f.CMSAPIKey == "" {
		return target{}, fmt.Errorf("%s is not what make run writes", verifyFile)
	}
	return target{url: strings.TrimRight(f.BaseURL, "/") + "/api/diagnostics", key: f.CMSAPIKey, where: "make run's stack, from " + verifyFile}, nil
}

// fetch calls the route, retrying while a fresh deployment is not up yet.
func fetch(ctx context.Context, hc *http.Client, t target, wait time.Duration, stderr io.Writer) (diagnostics.Report, error) {
	deadline := time.Now().Add(wait)
	for {
		rep, retry, err := fetchOnce(ctx, hc, t)
		if err == nil || !retry || time.Now().After(deadline) {
			return rep, err
		}
		fmt.Fprintf(stderr, "verify: %v; retrying\n", err)
		select {
		case <-ctx.Done():
			return diagnostics.Report{}, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

func fetchOnce(ctx context.Context, hc *http.Client, t target) (rep diagnostics.Report, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return rep, false, err
	}
	req.Header.Set("Authorization", "Bearer "+t.key)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return rep, ctx.Err() == nil, fmt.Errorf("no answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rep, true, fmt.Errorf("reading the answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return rep, true, fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorText(body))
	case http.StatusUnauthorized:
		return rep, false, errors.New("HTTP 401: the connector refused the CMS key (is it the current version of cms-api-key?)")
	default:
		return rep, false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorText(body))
	}
	if err := json.Unmarshal(body, &rep); err != nil || len(rep.Checks) == 0 {
		return rep, false, errors.New("the answer is not the diagnostics report (is the URL the connector's?)")
	}
	return rep, false, nil
}

// errorText is the contract's error message, or a short excerpt.
func errorText(body []byte) string {
	var e struct {
		Code    string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Code != "" {
		return e.Code + ": " + e.Message
	}
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
