package secrets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// envVersion is the version of every environment secret except the
// encryption key: there is only ever one value in hand.
const envVersion = "env"

// Env reads secrets from environment variables (the contract's fallback
// names). It is for local development: nothing is cached, so a test or a
// developer changing a variable is seen at once.
type Env struct {
	getenv func(string) string
}

var _ Source = (*Env)(nil)

// NewEnv returns a Source reading variables through getenv (os.Getenv in
// production; a map in tests).
func NewEnv(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Get returns the secret's environment value, or a *NotConfiguredError naming
// the variable when it is unset or empty.
func (e *Env) Get(_ context.Context, name string) (Secret, error) {
	if err := checkName(name); err != nil {
		return Secret{}, err
	}
	variable := EnvName(name)
	value := e.getenv(variable)
	if value == "" {
		return Secret{}, &NotConfiguredError{Name: name, Reason: "environment variable " + variable + " is not set (and KEY_VAULT_URL is unset)"}
	}
	return Secret{Name: name, Value: value, Version: envSecretVersion(name, value)}, nil
}

// GetVersion returns the environment value if it is that version. Any other
// version (for example a row sealed with an earlier local key) cannot be had
// and is reported as not configured.
func (e *Env) GetVersion(ctx context.Context, name, version string) (Secret, error) {
	s, err := e.Get(ctx, name)
	if err != nil {
		return Secret{}, err
	}
	if s.Version != version {
		return Secret{}, &NotConfiguredError{Name: name, Reason: fmt.Sprintf("version %q is not available: environment variable %s holds version %q", version, EnvName(name), s.Version)}
	}
	return s, nil
}

// Reload is Get: the environment is never cached.
func (e *Env) Reload(ctx context.Context, name string) (Secret, error) { return e.Get(ctx, name) }

// envSecretVersion derives the encryption key's version from its value, so
// rows sealed with an older local key name a version that no longer matches
// (and fail as not configured) instead of failing as tampered. A prefix of
// the hash identifies the key without revealing anything useful about it.
func envSecretVersion(name, value string) string {
	if name != EncryptionKey {
		return envVersion
	}
	sum := sha256.Sum256([]byte(value))
	return envVersion + hex.EncodeToString(sum[:4])
}
