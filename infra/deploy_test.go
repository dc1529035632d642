package infra

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// deploy.sh runs here against a stand-in az: a script that answers the calls
// deploy.sh makes from environment variables and records every call (and
// every secret written) to a log the tests read.

const fakeAz = `#!/usr/bin/env bash
set -u
printf 'CALL %s\n' "$*" >>"$FAKE_AZ_LOG"
arg() { # value after flag $1
	local want="$1"; shift
	while (($#)); do
		if [[ "$1" == "$want" ]]; then echo "${2:-}"; return; fi
		shift
	done
}
query="$(arg --query "$@")"
case "$1 $2" in
"account show")
	if [[ "${FAKE_AZ_LOGGED_OUT:-}" == 1 ]]; then
		echo "ERROR: Please run 'az login' to setup account." >&2; exit 1
	fi
	case "$query" in
	user.type) if [[ "${FAKE_AZ_IDENTITY:-}" == 1 ]]; then echo servicePrincipal; else echo user; fi ;;
	user.name) if [[ "${FAKE_AZ_IDENTITY:-}" == 1 ]]; then echo systemAssignedIdentity; else echo admin@contoso.example; fi ;;
	name) echo "Fake Subscription" ;;
	*) echo "{}" ;;
	esac ;;
"bicep version") echo "${FAKE_AZ_BICEP:-Bicep CLI version 0.38.5 (a1b2c3d4e5)}" ;;
"bicep install") ;;
"ad signed-in-user") echo 11111111-1111-1111-1111-111111111111 ;;
"group show")
	if [[ "${FAKE_AZ_NO_RG:-}" == 1 ]]; then echo "ERROR: (ResourceGroupNotFound)" >&2; exit 3; fi ;;
"group create") ;;
"deployment group")
	case "$3" in
	create)
		printf 'ENV ADMIN_PRINCIPAL_ID=%s ADMIN_PRINCIPAL_TYPE=%s\n' "${ADMIN_PRINCIPAL_ID:-}" "${ADMIN_PRINCIPAL_TYPE:-}" >>"$FAKE_AZ_LOG"
		if [[ -n "${FAKE_AZ_DEPLOY_ERROR:-}" ]]; then echo "$FAKE_AZ_DEPLOY_ERROR" >&2; exit 1; fi ;;
	show)
		mode="${FAKE_AZ_MODE:-managed_identity}"
		audience=AzureADMultipleOrgs
		[[ "$mode" == secret ]] && audience=AzureADandPersonalMicrosoftAccount
		audience="${FAKE_AZ_AUDIENCE:-$audience}"
		printf '%s\n' func-megdocs-ms-abc https://func-megdocs-ms-abc.azurewebsites.net \
			https://func-megdocs-ms-abc.azurewebsites.net/api/callback kvmegdocsmsabc \
			22222222-2222-2222-2222-222222222222 "$mode" True "$audience" "${FAKE_AZ_WEBHOOK:-False}" \
			"https://portal.azure.com/#@tenant/resource/wb/workbook" ;;
	esac ;;
"functionapp deployment")
	n=$(( $(cat "$FAKE_AZ_STATE/zip" 2>/dev/null || echo 0) + 1 ))
	echo "$n" >"$FAKE_AZ_STATE/zip"
	if [[ "${FAKE_AZ_ZIP_FAIL:-}" == 1 ]]; then
		echo "ERROR: Operation returned an invalid status 'Bad Request' (400)" >&2; exit 1
	fi
	if (( n <= ${FAKE_AZ_ZIP_403:-0} )); then
		echo "${FAKE_AZ_ZIP_403_MSG:-ERROR: Operation returned an invalid status 'Forbidden' (403)}" >&2; exit 1
	fi
	echo '{"status": 4}' ;;
"keyvault secret")
	name="$(arg --name "$@")"
	case "$3" in
	show)
		n=$(( $(cat "$FAKE_AZ_STATE/kv" 2>/dev/null || echo 0) + 1 ))
		echo "$n" >"$FAKE_AZ_STATE/kv"
		if (( n <= ${FAKE_AZ_KV_403:-0} )); then
			printf '%s\n' "ERROR: (Forbidden) Caller is not authorized to perform action on resource." \
				"If role assignments, deny assignments or role definitions were changed recently, please observe propagation time." \
				"Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'" "Assignment: (not found)" \
				"Code: Forbidden" >&2
			exit 1
		fi
		if [[ ",${FAKE_AZ_PRESENT:-}," == *",$name,"* ]]; then
			case "$query" in
			attributes.expires) echo 2027-01-01T00:00:00+00:00 ;;
			value) echo "OLD-VALUE-OF-$name" ;;
			*) echo "https://kv/secrets/$name/1" ;;
			esac
		else
			echo "ERROR: (SecretNotFound) A secret with (name/id) $name was not found in this key vault." >&2; exit 1
		fi ;;
	set)
		file="$(arg --file "$@")"
		printf 'SECRET %s expires=%s value=%s\n' "$name" "$(arg --expires "$@")" "$(cat "$file")" >>"$FAKE_AZ_LOG" ;;
	esac ;;
"ad app")
	if [[ "${FAKE_AZ_NOT_OWNER:-}" == 1 ]]; then echo "ERROR: Insufficient privileges to complete the operation." >&2; exit 1; fi
	echo "FAKE-CLIENT-SECRET-$(arg --end-date "$@")" ;;
*)
	echo "fake az: unexpected call: $*" >&2; exit 2 ;;
esac
`

// fakeMake stands in for make: deploy.sh ends with `make verify`. It records
// the call and the settings verify gets, and fails the first FAKE_MAKE_FAIL times.
const fakeMake = `#!/usr/bin/env bash
printf 'MAKE %s | RESOURCE_GROUP=%s FUNCTION_APP_NAME=%s KEY_VAULT_NAME=%s VERIFY_BASE_URL=%s\n' "$*" \
	"${RESOURCE_GROUP:-}" "${FUNCTION_APP_NAME:-}" "${KEY_VAULT_NAME:-}" "${VERIFY_BASE_URL:-}" >>"$FAKE_AZ_LOG"
n=$(( $(cat "$FAKE_AZ_STATE/make" 2>/dev/null || echo 0) + 1 ))
echo "$n" >"$FAKE_AZ_STATE/make"
if (( n <= ${FAKE_MAKE_FAIL:-0} )); then echo "verify: microsoft_credential FAILED" ; exit 2; fi
echo "verify: all checks ok"
`

type deployRun struct {
	stdout, stderr string
	code           int
	calls          []string          // az argument lists, in order
	secrets        map[string]string // name -> value written
	expires        map[string]string // name -> --expires
	env            string            // the admin principal az saw when deploying
	makes          []string          // make calls, with the environment verify saw
}

// runDeploy runs infra/deploy.sh with a stand-in az first on PATH.
func runDeploy(t *testing.T, env ...string) deployRun {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	state := filepath.Join(dir, "state")
	for _, d := range []string{bin, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "make"), []byte(fakeMake), 0o755); err != nil {
		t.Fatal(err)
	}
	zip := filepath.Join(dir, "app.zip")
	if err := os.WriteFile(zip, []byte("PK\x05\x06"+strings.Repeat("\x00", 18)), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "az.log")
	// DEPLOY_ARGS= are deploy.sh's arguments; EXTRA_PATH= goes first on PATH
	// (a stand-in date, say). Neither is passed on.
	var args []string
	path := bin + string(os.PathListSeparator) + os.Getenv("PATH")
	var rest []string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "DEPLOY_ARGS="); ok {
			args = strings.Fields(v)
		} else if v, ok := strings.CutPrefix(e, "EXTRA_PATH="); ok {
			path = v + string(os.PathListSeparator) + path
		} else {
			rest = append(rest, e)
		}
	}
	env = rest
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "infra", "deploy.sh")}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"PATH="+path,
		"FAKE_AZ_LOG="+log, "FAKE_AZ_STATE="+state,
		"APP_ZIP="+zip, "DEPLOY_RETRY_DELAY=0", "DEPLOYMENT_NAME=msconnector-test",
		"RESOURCE_GROUP=rg-test", "LOCATION=", "ADMIN_PRINCIPAL_ID=", "VERIFY_RETRY_DELAY=0",
	)
	cmd.Env = append(cmd.Env, env...)
	return finishDeploy(t, cmd, log)
}

func finishDeploy(t *testing.T, cmd *exec.Cmd, log string) deployRun {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	r := deployRun{secrets: map[string]string{}, expires: map[string]string{}}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run deploy.sh: %v", err)
	}
	r.stdout, r.stderr = out.String(), errOut.String()
	data, _ := os.ReadFile(log)
	secret := regexp.MustCompile(`^SECRET (\S+) expires=(\S*) value=(.*)$`)
	for _, line := range strings.Split(string(data), "\n") {
		if c, ok := strings.CutPrefix(line, "CALL "); ok {
			r.calls = append(r.calls, c)
		} else if e, ok := strings.CutPrefix(line, "ENV "); ok {
			r.env = e
		} else if m, ok := strings.CutPrefix(line, "MAKE "); ok {
			r.makes = append(r.makes, m)
		} else if m := secret.FindStringSubmatch(line); m != nil {
			r.secrets[m[1]] = m[3]
			r.expires[m[1]] = m[2]
		}
	}
	return r
}

func (r deployRun) count(prefix string) int {
	n := 0
	for _, c := range r.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (r deployRun) call(prefix string) string {
	for _, c := range r.calls {
		if strings.HasPrefix(c, prefix) {
			return c
		}
	}
	return ""
}

func (r deployRun) String() string {
	return "exit " + strconv.Itoa(r.code) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr + "\naz calls:\n  " + strings.Join(r.calls, "\n  ") + "\nmake calls:\n  " + strings.Join(r.makes, "\n  ")
}

func TestDeployNeedsAzureCLI(t *testing.T) {
	root := repoRoot(t)
	// A PATH with the few tools deploy.sh touches before its checks, and no az.
	bin := t.TempDir()
	for _, tool := range []string{"date"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, filepath.Join(root, "infra", "deploy.sh"))
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir()}
	r := finishDeploy(t, cmd, filepath.Join(bin, "none.log"))
	if r.code == 0 || !strings.Contains(r.stderr, "the Azure CLI (az) is not installed") {
		t.Fatalf("want a clear error without az:\n%s", r)
	}
}

func TestDeployNeedsLogin(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_LOGGED_OUT=1")
	if r.code == 0 || !strings.Contains(r.stderr, "not logged in") || !strings.Contains(r.stderr, "az login") {
		t.Fatalf("want a clear error when logged out:\n%s", r)
	}
	if r.count("deployment group create") != 0 {
		t.Error("deployed although not logged in")
	}
}

func TestDeployNeedsRecentBicep(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_BICEP=Bicep CLI version 0.30.23 (ec3612124e)")
	if r.code == 0 || !strings.Contains(r.stderr, "az bicep upgrade") {
		t.Fatalf("want a clear error for Bicep older than 0.36.1:\n%s", r)
	}
	if r.count("deployment group create") != 0 {
		t.Error("deployed with a Bicep too old for the Graph extension")
	}
}

func TestDeployCreatesMissingResourceGroupOnlyWithLocation(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_NO_RG=1")
	if r.code == 0 || !strings.Contains(r.stderr, "set LOCATION") {
		t.Fatalf("want a request for LOCATION:\n%s", r)
	}
	r = runDeploy(t, "FAKE_AZ_NO_RG=1", "LOCATION=westeurope")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	if c := r.call("group create"); !strings.Contains(c, "--name rg-test") || !strings.Contains(c, "--location westeurope") {
		t.Errorf("group create call = %q", c)
	}
}

// TestDeployManagedIdentity is the default path: no client secret anywhere,
// the zip retried through 403s, the generated secrets in Key Vault only.
func TestDeployManagedIdentity(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_ZIP_403=2")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	create := r.call("deployment group create")
	for _, want := range []string{"--resource-group rg-test", "--name msconnector-test", "--parameters infra/main.bicepparam"} {
		if !strings.Contains(create, want) {
			t.Errorf("deployment call %q lacks %q", create, want)
		}
	}
	// The admin's object ID is Bicep's deployer(): deploy.sh only says what kind it is.
	if want := "ADMIN_PRINCIPAL_ID= ADMIN_PRINCIPAL_TYPE=User"; r.env != want {
		t.Errorf("deployment environment %q, want %q (main.bicepparam reads it)", r.env, want)
	}
	if n := r.count("functionapp deployment source config-zip"); n != 3 {
		t.Errorf("zip uploads = %d, want 3 (two 403s, then success)", n)
	}
	if c := r.call("functionapp deployment source config-zip"); !strings.Contains(c, "--name func-megdocs-ms-abc") || !strings.Contains(c, "--src ") {
		t.Errorf("zip upload call = %q", c)
	}

	for _, name := range []string{"token-encryption-key", "cms-api-key"} {
		v, ok := r.secrets[name]
		if !ok {
			t.Errorf("%s was not stored", name)
			continue
		}
		if key, err := base64.StdEncoding.DecodeString(v); err != nil || len(key) != 32 {
			t.Errorf("%s is not base64 of 32 random bytes", name)
		}
		if strings.Contains(r.stdout+r.stderr, v) {
			t.Errorf("%s was printed", name)
		}
	}
	if r.secrets["token-encryption-key"] == r.secrets["cms-api-key"] {
		t.Error("the two generated secrets are equal")
	}
	if _, ok := r.secrets["microsoft-client-secret"]; ok || r.count("ad app credential") > 0 {
		t.Error("managed_identity mode created a client secret")
	}
	if _, ok := r.secrets["cms-webhook-secret"]; ok {
		t.Error("cms-webhook-secret created without a webhook")
	}
	for _, c := range r.calls {
		if strings.Contains(c, "--value") {
			t.Errorf("a secret value was passed on the command line: az %s", c)
		}
	}
	for _, want := range []string{
		"https://func-megdocs-ms-abc.azurewebsites.net/api/callback",
		"KEY_VAULT_NAME=kvmegdocsmsabc infra/deploy.sh rotate token-encryption-key",
		"KEY_VAULT_NAME=kvmegdocsmsabc infra/deploy.sh rotate cms-api-key",
		"az ad app permission admin-consent --id 22222222-2222-2222-2222-222222222222",
		"No client secret exists",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(r.stdout, "microsoft-client-secret") {
		t.Error("output mentions a client secret in managed_identity mode")
	}
}

func TestDeploySecretMode(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_MODE=secret", "FAKE_AZ_WEBHOOK=True")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	reset := r.call("ad app credential reset")
	if !strings.Contains(reset, "--id 22222222-2222-2222-2222-222222222222") || !strings.Contains(reset, "--append") {
		t.Fatalf("credential reset call = %q, want --append on the app", reset)
	}
	end := regexp.MustCompile(`--end-date (\S+)`).FindStringSubmatch(reset)
	if end == nil {
		t.Fatalf("credential reset without --end-date: %q", reset)
	}
	if got, want := r.secrets["microsoft-client-secret"], "FAKE-CLIENT-SECRET-"+end[1]; got != want {
		t.Errorf("microsoft-client-secret = %q, want the new credential %q", got, want)
	}
	if got := r.expires["microsoft-client-secret"]; got != end[1] {
		t.Errorf("microsoft-client-secret --expires %q, want the credential's end date %q", got, end[1])
	}
	if strings.Contains(r.stdout+r.stderr, "FAKE-CLIENT-SECRET") {
		t.Error("the client secret was printed")
	}
	if _, ok := r.secrets["cms-webhook-secret"]; !ok {
		t.Error("cms-webhook-secret not created although the webhook is on")
	}
	if !strings.Contains(r.stdout, "KEY_VAULT_NAME=kvmegdocsmsabc MICROSOFT_CLIENT_ID=22222222-2222-2222-2222-222222222222 infra/deploy.sh rotate microsoft-client-secret") {
		t.Error("output lacks the client secret rotation command")
	}
	if strings.Contains(r.stderr, "personal Microsoft accounts is not documented") {
		t.Error("secret mode warned about managed identity")
	}
}

func TestDeployWarnsManagedIdentityWithPersonalAccounts(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_MODE=managed_identity", "FAKE_AZ_AUDIENCE=AzureADandPersonalMicrosoftAccount")
	if r.code != 0 || !strings.Contains(r.stderr, "personal Microsoft accounts is not documented") {
		t.Fatalf("want a warning for managed_identity with personal accounts:\n%s", r)
	}
	r = runDeploy(t, "FAKE_AZ_MODE=managed_identity")
	if strings.Contains(r.stderr, "personal Microsoft accounts") {
		t.Fatalf("warned for a work and school audience:\n%s", r)
	}
}

func TestDeployKeepsExistingSecrets(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_MODE=secret", "FAKE_AZ_PRESENT=token-encryption-key,cms-api-key,microsoft-client-secret")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	if len(r.secrets) != 0 {
		t.Errorf("existing secrets overwritten: %v", keysOf(r.secrets))
	}
	if r.count("ad app credential") != 0 {
		t.Error("a client secret was added although one is stored")
	}
	if !strings.Contains(r.stdout, "expires 2027-01-01") {
		t.Error("output does not show the stored client secret's expiry")
	}
}

// TestDeployWaitsForKeyVaultAccess: Key Vault's 403 while the new Secrets
// Officer assignment propagates says "Assignment: (not found)"; it must be
// retried, never read as "secret absent" (which would overwrite the CMS key).
func TestDeployWaitsForKeyVaultAccess(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_KV_403=2", "FAKE_AZ_PRESENT=token-encryption-key,cms-api-key")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	if len(r.secrets) != 0 {
		t.Errorf("secrets written while Key Vault answered 403: %v", keysOf(r.secrets))
	}
	if n := r.count("keyvault secret show"); n != 4 {
		t.Errorf("secret reads = %d, want 4 (two 403s, then one per secret)", n)
	}
	r = runDeploy(t, "FAKE_AZ_KV_403=100", "DEPLOY_RETRIES=2")
	if r.code == 0 || !strings.Contains(r.stderr, "Key Vault Secrets Officer") || len(r.secrets) != 0 {
		t.Fatalf("want a failure naming the missing role and nothing written:\n%s", r)
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDeployStopsOnOtherUploadErrors(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_ZIP_FAIL=1")
	if r.code == 0 || !strings.Contains(r.stderr, "zip deployment to func-megdocs-ms-abc failed") {
		t.Fatalf("want a failure:\n%s", r)
	}
	if n := r.count("functionapp deployment source config-zip"); n != 1 {
		t.Errorf("uploads = %d, want 1: only 403 is retried", n)
	}
	if len(r.secrets) != 0 {
		t.Error("secrets written after a failed upload")
	}
}

func TestDeployGivesUpAfterRetries(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_ZIP_403=100", "DEPLOY_RETRIES=3")
	if r.code == 0 || !strings.Contains(r.stderr, "still forbidden after 3 attempts") {
		t.Fatalf("want a failure after 3 attempts:\n%s", r)
	}
	if n := r.count("functionapp deployment source config-zip"); n != 3 {
		t.Errorf("uploads = %d, want 3", n)
	}
}
