package infra

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The deploy-time traps of issue 14, each against the stand-in az (and make).

// TestDeployUnderManagedIdentityLogin: `az login --identity` is a service
// principal whose user.name is "systemAssignedIdentity", not an app ID, and
// a managed identity usually cannot read Microsoft Graph. deploy.sh must not
// look the admin up in Graph: Bicep's deployer() gives the object ID.
func TestDeployUnderManagedIdentityLogin(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_IDENTITY=1")
	if r.code != 0 {
		t.Fatalf("deploy under az login --identity failed:\n%s", r)
	}
	if n := r.count("ad "); n != 0 {
		t.Errorf("deploy.sh called Microsoft Graph (az ad ...) %d times; a managed identity may not read it", n)
	}
	if want := "ADMIN_PRINCIPAL_ID= ADMIN_PRINCIPAL_TYPE=ServicePrincipal"; r.env != want {
		t.Errorf("deployment environment %q, want %q: Bicep resolves the object ID, the type is ServicePrincipal", r.env, want)
	}
	// A person deploying is a User; an explicit admin keeps its own type.
	r = runDeploy(t, "ADMIN_PRINCIPAL_ID=33333333-3333-3333-3333-333333333333", "ADMIN_PRINCIPAL_TYPE=Group")
	if want := "ADMIN_PRINCIPAL_ID=33333333-3333-3333-3333-333333333333 ADMIN_PRINCIPAL_TYPE=Group"; r.code != 0 || r.env != want {
		t.Errorf("explicit admin: exit %d, environment %q, want %q", r.code, r.env, want)
	}
}

// TestAdminAndOwnerComeFromDeployer: the Bicep side of the trap above, and
// the owners trap: the deploying principal owns the app registration.
func TestAdminAndOwnerComeFromDeployer(t *testing.T) {
	main := loadFile(t, "main.bicep")
	if got := text(main.must(t, "variable_declaration", "deployerObjectId").value); got != "deployer().objectId" {
		t.Errorf("deployerObjectId = %s, want deployer().objectId", got)
	}
	if got := text(main.must(t, "variable_declaration", "adminObjectId").value); got != "empty(adminPrincipalId) ? deployerObjectId : adminPrincipalId" {
		t.Errorf("adminObjectId = %s, want the deployer unless adminPrincipalId is given", got)
	}
	kv := bodyObject(main.must(t, "module_declaration", "keyVault").value)
	if got := text(prop(kv, "params", "adminPrincipalId")); got != "adminObjectId" {
		t.Errorf("keyVault adminPrincipalId = %s, want adminObjectId", got)
	}
	reg := bodyObject(main.must(t, "module_declaration", "registration").value)
	owners := elements(prop(reg, "params", "ownerObjectIds"))
	if len(owners) != 1 || owners[0].Text != "deployerObjectId" {
		t.Errorf("registration ownerObjectIds = %s, want [deployerObjectId]", text(prop(reg, "params", "ownerObjectIds")))
	}
	mod := loadFile(t, "modules/app-registration.bicep")
	app := bodyObject(mod.resourcesOfType("Microsoft.Graph/applications@v1.0")[0].value)
	if got := text(prop(app, "owners", "relationships")); got != "ownerObjectIds" {
		t.Errorf("application owners.relationships = %s, want ownerObjectIds", got)
	}
	// "replace" would remove the admins a previous deployment added.
	if sem := prop(app, "owners", "relationshipSemantics"); sem != nil && text(sem) != "'append'" {
		t.Errorf("owners.relationshipSemantics = %s: owners must be added, never replaced", text(sem))
	}
}

// TestDeployRetriesEveryForbiddenWording: Azure says "not authorized" in
// several ways while a role assignment propagates; each must be retried.
func TestDeployRetriesEveryForbiddenWording(t *testing.T) {
	for _, msg := range []string{
		"ERROR: Operation returned an invalid status 'Forbidden' (403)",
		"ERROR: This request is not authorized to perform this operation using this permission.",
		"ERROR: (AuthorizationFailed) The client 'x' with object id 'y' does not have authorization to perform action 'Microsoft.Web/sites/publishxml/action'",
		"ERROR: Caller is not authorized to perform action on resource.",
		"ERROR: The client is not authorised to perform this action.",
		"ERROR: (AuthorizationFailure) This request is not allowed.",
	} {
		r := runDeploy(t, "FAKE_AZ_ZIP_403=1", "FAKE_AZ_ZIP_403_MSG="+msg)
		if r.code != 0 || r.count("functionapp deployment source config-zip") != 2 {
			t.Errorf("%q was not retried:\n%s", msg, r)
		}
	}
}

func TestDeployNamesTheVaultSaltWhenANameIsHeld(t *testing.T) {
	r := runDeploy(t, "FAKE_AZ_DEPLOY_ERROR=ERROR: (ConflictError) A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault.")
	if r.code == 0 || !strings.Contains(r.stderr, "KEY_VAULT_NAME_SALT") {
		t.Fatalf("want the KEY_VAULT_NAME_SALT advice:\n%s", r)
	}
	if r.count("functionapp deployment") != 0 {
		t.Error("uploaded after a failed deployment")
	}
	r = runDeploy(t, "FAKE_AZ_DEPLOY_ERROR=ERROR: InvalidTemplate")
	if r.code == 0 || strings.Contains(r.stderr, "KEY_VAULT_NAME_SALT") || !strings.Contains(r.stderr, "InvalidTemplate") {
		t.Fatalf("want the deployment's own error and no vault advice:\n%s", r)
	}
}

// TestDeployEndsWithVerify: make verify runs last, with the settings its
// command reads, retried while a new app starts, and its failure fails the deploy.
func TestDeployEndsWithVerify(t *testing.T) {
	r := runDeploy(t, "FAKE_MAKE_FAIL=2")
	if r.code != 0 {
		t.Fatalf("deploy failed:\n%s", r)
	}
	want := "-C " + repoRoot(t) + " verify | RESOURCE_GROUP=rg-test FUNCTION_APP_NAME=func-megdocs-ms-abc KEY_VAULT_NAME=kvmegdocsmsabc VERIFY_BASE_URL=https://func-megdocs-ms-abc.azurewebsites.net"
	if len(r.makes) != 3 {
		t.Fatalf("make calls = %d, want 3 (two failures, then success):\n%s", len(r.makes), r)
	}
	for _, m := range r.makes {
		if !strings.HasSuffix(m, want) {
			t.Errorf("make call %q, want ... %q", m, want)
		}
	}
	if !strings.Contains(r.stdout, "https://portal.azure.com/#@tenant/resource/wb/workbook") {
		t.Error("the dashboard URL is not printed")
	}

	r = runDeploy(t, "FAKE_MAKE_FAIL=100", "VERIFY_ATTEMPTS=2")
	if r.code == 0 || len(r.makes) != 2 || !strings.Contains(r.stderr, "make verify still fails") {
		t.Fatalf("want a failure after 2 verify attempts:\n%s", r)
	}
	r = runDeploy(t, "VERIFY_ATTEMPTS=0")
	if r.code != 0 || len(r.makes) != 0 || !strings.Contains(r.stdout, "VERIFY_BASE_URL=https://func-megdocs-ms-abc.azurewebsites.net make verify") {
		t.Fatalf("VERIFY_ATTEMPTS=0 must skip verify and print the command:\n%s", r)
	}
}

// TestPrintedCommandsCarryNoSecretAndRunOnMacOS: what deploy.sh tells the
// admin to run later puts no secret value on a command line (where ps shows
// it) and uses no GNU-only date -d.
func TestPrintedCommandsCarryNoSecretAndRunOnMacOS(t *testing.T) {
	for _, env := range [][]string{{"FAKE_AZ_MODE=managed_identity"}, {"FAKE_AZ_MODE=secret", "FAKE_AZ_WEBHOOK=True"}, {"FAKE_AZ_MODE=secret", "FAKE_AZ_NOT_OWNER=1"}} {
		r := runDeploy(t, env...)
		if r.code != 0 {
			t.Fatalf("deploy failed:\n%s", r)
		}
		for _, bad := range []*regexp.Regexp{
			regexp.MustCompile(`--value\b`),
			regexp.MustCompile(`\bdate\b[^\n]*\s-d\b`),
			regexp.MustCompile(`--query\s+password`),
		} {
			if m := bad.FindString(r.stdout); m != "" {
				t.Errorf("%v: printed command contains %q:\n%s", env, m, r.stdout)
			}
		}
	}
}

// runRotate runs `deploy.sh rotate <name>` against the stand-in az.
func runRotate(t *testing.T, name string, env ...string) deployRun {
	t.Helper()
	return runDeploy(t, append([]string{"DEPLOY_ARGS=rotate " + name}, env...)...)
}

func TestRotate(t *testing.T) {
	r := runRotate(t, "token-encryption-key", "KEY_VAULT_NAME=kvtest")
	if r.code != 0 || len(r.secrets) != 1 || r.count("deployment group") != 0 {
		t.Fatalf("rotate token-encryption-key: want one secret and no deployment:\n%s", r)
	}
	if len(r.secrets["token-encryption-key"]) != 44 {
		t.Errorf("token-encryption-key = %d characters, want base64 of 32 bytes without a newline", len(r.secrets["token-encryption-key"]))
	}

	r = runRotate(t, "cms-api-key", "KEY_VAULT_NAME=kvtest", "FAKE_AZ_PRESENT=cms-api-key")
	if r.code != 0 {
		t.Fatalf("rotate cms-api-key failed:\n%s", r)
	}
	if got := r.secrets["cms-api-key-previous"]; got != "OLD-VALUE-OF-cms-api-key" {
		t.Errorf("cms-api-key-previous = %q, want the old key", got)
	}
	if got := r.secrets["cms-api-key"]; len(got) != 44 || got == "OLD-VALUE-OF-cms-api-key" {
		t.Errorf("cms-api-key = %q, want a new random key", got)
	}

	r = runRotate(t, "microsoft-client-secret", "KEY_VAULT_NAME=kvtest", "MICROSOFT_CLIENT_ID=22222222-2222-2222-2222-222222222222")
	if r.code != 0 {
		t.Fatalf("rotate microsoft-client-secret failed:\n%s", r)
	}
	end := regexp.MustCompile(`--end-date (\S+)`).FindStringSubmatch(r.call("ad app credential reset"))
	if end == nil || r.secrets["microsoft-client-secret"] != "FAKE-CLIENT-SECRET-"+end[1] || r.expires["microsoft-client-secret"] != end[1] {
		t.Errorf("microsoft-client-secret not stored with the credential's end date:\n%s", r)
	}

	for _, c := range [][]string{
		{"token-encryption-key"},                         // no KEY_VAULT_NAME
		{"microsoft-client-secret", "KEY_VAULT_NAME=kv"}, // no MICROSOFT_CLIENT_ID
		{"no-such-secret", "KEY_VAULT_NAME=kv"},
		{"microsoft-client-secret", "KEY_VAULT_NAME=kv", "MICROSOFT_CLIENT_ID=x", "FAKE_AZ_NOT_OWNER=1"},
	} {
		if r := runRotate(t, c[0], c[1:]...); r.code == 0 || len(r.secrets) != 0 {
			t.Errorf("rotate %v: want a failure and nothing stored:\n%s", c, r)
		}
	}
}

// TestRotateNeverPutsAValueOnACommandLine: every az call of every rotation,
// and the values, checked against the recorded argument lists.
func TestRotateNeverPutsAValueOnACommandLine(t *testing.T) {
	for _, name := range []string{"token-encryption-key", "cms-api-key", "cms-webhook-secret", "microsoft-client-secret"} {
		r := runRotate(t, name, "KEY_VAULT_NAME=kvtest", "MICROSOFT_CLIENT_ID=c", "FAKE_AZ_PRESENT=cms-api-key")
		if r.code != 0 {
			t.Fatalf("rotate %s failed:\n%s", name, r)
		}
		for _, c := range r.calls {
			if strings.Contains(c, "--value") {
				t.Errorf("rotate %s: az %s", name, c)
			}
			for _, v := range r.secrets {
				if strings.Contains(c, v) {
					t.Errorf("rotate %s: a secret value is on the command line: az %s", name, c)
				}
			}
		}
		for _, v := range r.secrets {
			if strings.Contains(r.stdout+r.stderr, v) {
				t.Errorf("rotate %s printed a secret value", name)
			}
		}
	}
}

// TestRotateWithBSDDate: macOS's date has no -d; the client secret's end
// date must still be computed (date -v).
func TestRotateWithBSDDate(t *testing.T) {
	bin := t.TempDir()
	bsd := "#!/usr/bin/env bash\nfor a in \"$@\"; do [[ \"$a\" == -d ]] && { echo 'date: illegal option -- d' >&2; exit 1; }; done\n" +
		"for a in \"$@\"; do [[ \"$a\" == -v* ]] && { echo 2027-12-02T12:00:00Z; exit 0; }; done\nexec " + mustLook(t, "date") + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "date"), []byte(bsd), 0o755); err != nil {
		t.Fatal(err)
	}
	r := runRotate(t, "microsoft-client-secret", "KEY_VAULT_NAME=kvtest", "MICROSOFT_CLIENT_ID=c", "EXTRA_PATH="+bin)
	if r.code != 0 || r.expires["microsoft-client-secret"] != "2027-12-02T12:00:00Z" {
		t.Fatalf("with a BSD date: want the end date from date -v:\n%s", r)
	}
}

func mustLook(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
