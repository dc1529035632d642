package secrets

// A failed Key Vault read: recorded in the slot (keeping the last good value
// unless Key Vault said the secret is gone), explained for an admin, and
// logged at most once per WarnEvery per kind of failure.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// failed records a failed read. With a last good value it returns that,
// unless Key Vault said the secret no longer exists (404); otherwise a
// *NotConfiguredError saying what to fix.
func (k *KeyVault) failed(key slotKey, err error, now time.Time) (Secret, error) {
	f := k.classify(key, err)

	k.mu.Lock()
	sl := k.slot(key)
	sl.next = now.Add(k.backoff)
	changed := !sl.failing || sl.lastKind != f.kind
	sl.failing = true
	logNow := changed || now.Sub(sl.lastLogged) >= k.warnEvery
	suppressed := 0
	if logNow {
		suppressed, sl.suppressed = sl.suppressed, 0
		sl.lastLogged, sl.lastKind = now, f.kind
	} else {
		sl.suppressed++
	}
	deleted := f.kind == "not_found" && key.version == "" && sl.hasGood
	if deleted {
		// Key Vault says the secret no longer exists: an admin removed it
		// (cms-api-key-previous at the end of a rotation, say). The
		// last-good rule covers a vault that cannot be reached or refuses
		// (403), not one that answers "gone": stop serving the value.
		sl.hasGood, sl.good = false, Secret{}
		changed, logNow = true, true
	}
	good, hasGood, goodAt := sl.good, sl.hasGood, sl.goodAt
	var nc *NotConfiguredError
	if !hasGood {
		nc = &NotConfiguredError{Name: key.name, Reason: f.problem + ": " + f.fix, Err: err}
		sl.err = nc
	}
	k.mu.Unlock()

	if logNow {
		ev := k.log.Error()
		msg := "key vault secret cannot be read; it is not configured until it can"
		switch {
		case hasGood:
			ev = k.log.Warn()
			msg = "key vault secret cannot be read; serving the last good value"
		case deleted:
			msg = "key vault secret was deleted; its last value is no longer used"
			if optional(key.name) {
				ev = k.log.Info()
			}
		case f.kind == "not_found" && key.version == "" && optional(key.name):
			// Absent is the normal state of an optional secret: say so
			// once in a while, without raising an alarm.
			ev = k.log.Info()
			msg = "optional key vault secret is not set"
		}
		ev = ev.Str("event", "secret_unavailable").Str("secret", key.name).Str("vault", k.vaultURL).
			Str("reason", f.kind).Str("problem", f.problem).Str("fix", f.fix)
		if key.version != "" {
			ev = ev.Str("version", key.version)
		}
		if f.status != 0 {
			ev = ev.Int("status", f.status)
		}
		if f.code != "" {
			ev = ev.Str("error_code", f.code)
		}
		if hasGood {
			ev = ev.Str("serving", "last_good").Str("last_good_version", good.Version).
				Int64("last_good_age_s", int64(now.Sub(goodAt)/time.Second))
		}
		if suppressed > 0 {
			ev = ev.Int("suppressed", suppressed)
		}
		ev.Err(err).Msg(msg)
	}
	if hasGood {
		return good, nil
	}
	return Secret{}, nc
}

// failure is a failed read explained for an admin.
type failure struct {
	kind    string // stable, for the log's reason field
	status  int
	code    string
	problem string
	fix     string
}

func (k *KeyVault) classify(key slotKey, err error) failure {
	what := fmt.Sprintf("secret %s", key.name)
	if key.version != "" {
		what = fmt.Sprintf("version %s of secret %s", key.version, key.name)
	}
	var (
		re *azcore.ResponseError
		ie *identityError
	)
	switch {
	case errors.Is(err, errEmptyValue):
		return failure{kind: "empty",
			problem: fmt.Sprintf("%s in key vault %s has an empty value", what, k.vaultURL),
			fix:     k.setCommand(key.name)}
	case errors.As(err, &ie):
		return failure{kind: "identity",
			problem: fmt.Sprintf("the app's identity could not get a token to read %s from key vault %s", what, k.vaultURL),
			fix:     "give the function app a managed identity (locally: az login, or set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET)"}
	case errors.As(err, &re):
		f := failure{status: re.StatusCode, code: re.ErrorCode}
		switch re.StatusCode {
		case 404:
			f.kind = "not_found"
			f.problem = fmt.Sprintf("%s not found in key vault %s", what, k.vaultURL)
			if key.version == "" {
				f.fix = k.setCommand(key.name)
			} else {
				f.fix = fmt.Sprintf("values sealed with it cannot be opened until it is back: list versions with az keyvault secret list-versions --vault-name %s --name %s, and recover a deleted secret with az keyvault secret recover", k.vaultName, key.name)
			}
		case 403:
			f.kind = "forbidden"
			f.problem = fmt.Sprintf("key vault %s refused to read %s (403)", k.vaultURL, what)
			f.fix = fmt.Sprintf(`assign the role "Key Vault Secrets User" on vault %s to the app's managed identity: az role assignment create --role "Key Vault Secrets User" --assignee <principal-id> --scope $(az keyvault show --name %s --query id -o tsv); new role assignments can take minutes to apply; also check that the secret is enabled`, k.vaultName, k.vaultName)
		case 401:
			f.kind = "unauthorized"
			f.problem = fmt.Sprintf("key vault %s rejected the app's token reading %s (401)", k.vaultURL, what)
			f.fix = "check that the vault is in the same Microsoft Entra tenant as the app's managed identity"
		case 429:
			f.kind = "throttled"
			f.problem = fmt.Sprintf("key vault %s throttled the read of %s (429)", k.vaultURL, what)
			f.fix = "reads are cached for SECRETS_CACHE_TTL; look for other clients of the vault"
		default:
			f.kind = "unavailable"
			f.problem = fmt.Sprintf("key vault %s answered %d reading %s", k.vaultURL, re.StatusCode, what)
			f.fix = "retried automatically; check Azure status if it persists"
		}
		return f
	case errors.Is(err, context.DeadlineExceeded):
		return failure{kind: "timeout",
			problem: fmt.Sprintf("key vault %s did not answer within %s reading %s", k.vaultURL, k.fetchTimeout, what),
			fix:     "check KEY_VAULT_URL and the network path to the vault (firewall, private endpoint, DNS)"}
	default:
		return failure{kind: "unreachable",
			problem: fmt.Sprintf("key vault %s cannot be reached reading %s", k.vaultURL, what),
			fix:     "check KEY_VAULT_URL and the network path to the vault (firewall, private endpoint, DNS)"}
	}
}

// optional reports whether a secret is normally absent: the previous CMS key
// exists only while the CMS rotates its key.
func optional(name string) bool { return name == CMSAPIKeyPrevious }

func (k *KeyVault) setCommand(name string) string {
	value := "<value>"
	if name == EncryptionKey {
		value = `"$(openssl rand -base64 32)"`
	}
	return fmt.Sprintf("create it with az keyvault secret set --vault-name %s --name %s --value %s", k.vaultName, name, value)
}
