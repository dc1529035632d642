package secrets

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestNamesMatchTheContract(t *testing.T) {
	// The contract's table, spelled out: a typo in a constant would make a
	// deployed vault look empty.
	want := map[string]string{
		"microsoft-client-secret": "MICROSOFT_CLIENT_SECRET",
		"token-encryption-key":    "TOKEN_ENCRYPTION_KEY",
		"cms-api-key":             "CMS_API_KEY",
		"cms-api-key-previous":    "CMS_API_KEY_PREVIOUS",
		"cms-webhook-secret":      "CMS_WEBHOOK_SECRET",
	}
	consts := map[string]string{
		ClientSecret:      EnvClientSecret,
		EncryptionKey:     EnvEncryptionKey,
		CMSAPIKey:         EnvCMSAPIKey,
		CMSAPIKeyPrevious: EnvCMSAPIKeyPrevious,
		WebhookSecret:     EnvWebhookSecret,
	}
	if len(consts) != len(want) {
		t.Fatalf("%d distinct constants, want %d", len(consts), len(want))
	}
	for name, env := range want {
		if got, ok := consts[name]; !ok || got != env {
			t.Errorf("constant for %s: env %q (present %t), want %q", name, got, ok, env)
		}
		if got := EnvName(name); got != env {
			t.Errorf("EnvName(%q) = %q, want %q", name, got, env)
		}
		if err := checkName(name); err != nil {
			t.Errorf("%s is not a valid Key Vault name: %v", name, err)
		}
	}
	names := Names()
	if len(names) != len(want) {
		t.Errorf("Names() = %v, want the %d contract names", names, len(want))
	}
	for _, n := range names {
		if _, ok := want[n]; !ok {
			t.Errorf("Names() has %q, not in the contract", n)
		}
	}
}

func TestSecretNeverPrintsValue(t *testing.T) {
	const value = "s3cr3t-Value~with.chars"
	s := Secret{Name: ClientSecret, Value: value, Version: "4a3b", Expires: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)}

	outputs := map[string]string{}
	for _, format := range []string{"%v", "%+v", "%s", "%#v", "%q", "%d", "%x", "%t", "%10.3v"} {
		outputs[format] = fmt.Sprintf(format, s)
	}
	outputs["pointer %v"] = fmt.Sprintf("%v", &s)
	outputs["slice %v"] = fmt.Sprintf("%v", []Secret{s})
	j, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	outputs["json"] = string(j)
	var lb logBuffer
	log := zerolog.New(&lb)
	log.Info().Object("secret", s).Interface("iface", s).Stringer("str", s).Msg("x")
	outputs["zerolog"] = lb.String()

	for how, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("%s printed the value: %s", how, out)
		}
		if !strings.Contains(out, ClientSecret) || !strings.Contains(out, "4a3b") {
			t.Errorf("%s lost the name or version: %s", how, out)
		}
	}
	if !strings.Contains(outputs["zerolog"], `"value_set":true`) || !strings.Contains(outputs["zerolog"], `"expires":"2027-01-02T03:04:05Z"`) {
		t.Errorf("zerolog object = %s, want value_set and expires", outputs["zerolog"])
	}
}

func TestNotConfiguredError(t *testing.T) {
	cause := errors.New("403 forbidden")
	var err error = &NotConfiguredError{Name: CMSAPIKey, Reason: "refused: assign the role", Err: cause}
	wrapped := fmt.Errorf("httpapi: auth: %w", err)

	if !errors.Is(wrapped, ErrNotConfigured) {
		t.Error("errors.Is(wrapped, ErrNotConfigured) = false")
	}
	if !errors.Is(wrapped, cause) {
		t.Error("the cause is not unwrapped")
	}
	var nc *NotConfiguredError
	if !errors.As(wrapped, &nc) || nc.Name != CMSAPIKey {
		t.Errorf("errors.As: %v, name %q", nc, nc.Name)
	}
	if got, want := err.Error(), "secrets: cms-api-key not configured: refused: assign the role"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Is(errors.New("other"), ErrNotConfigured) {
		t.Error("an unrelated error matched ErrNotConfigured")
	}
}
