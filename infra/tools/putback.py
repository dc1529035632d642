#!/usr/bin/env python3
# putback: puts each defect of issue 14 back, one at a time, runs the test
# meant to catch it, and restores the file. Every line must say "FAILS (good)".
#
#   /usr/bin/python3 infra/tools/putback.py      (from the repository root)
#
# Not part of make test: it edits tracked files while it runs (each is
# restored right after its test), so run it on a clean tree only.
import subprocess
import sys

failed = False
cases = [
 ("secretsCacheTtl param", "infra/main.bicep", "keyVaultCacheTtl", "secretsCacheTtl", "TestLintRules/secure-secrets-in-params"),
 ("ftpsState", "infra/modules/functionapp.bicep", "      minTlsVersion: '1.2'\n    }", "      minTlsVersion: '1.2'\n      ftpsState: 'Disabled'\n    }", "TestFlexSites"),
 ("maximumInstanceCount min 1", "infra/main.bicep", "@minValue(40)\n@maxValue(1000)\nparam maximumInstanceCount", "@minValue(1)\n@maxValue(1000)\nparam maximumInstanceCount", "TestPlatformBounds"),
 ("module min 1", "infra/modules/functionapp.bicep", "@minValue(40)", "@minValue(1)", "TestPlatformBounds"),
 ("vault name without salt", "infra/main.bicep", "  keyVault: 'kv${take(compactName, 9)}${keyVaultSuffix}'", "  keyVault: 'kv${take(compactName, 9)}${suffix}'", "TestKeyVaultNameSalt"),
 ("no owners", "infra/modules/app-registration.bicep", "  owners: {\n    relationships: ownerObjectIds\n  }\n", "", "TestAdminAndOwnerComeFromDeployer|TestLintRules"),
 ("identity login via az ad", "infra/deploy.sh", 'if [[ -z "$ADMIN_PRINCIPAL_ID" ]]; then\n\tif [[ "$account_type" == "user" ]]; then\n\t\tadmin_type=User', 'if [[ -z "$ADMIN_PRINCIPAL_ID" ]]; then\n\tif [[ "$account_type" == "user" ]]; then\n\t\tADMIN_PRINCIPAL_ID="$(az ad signed-in-user show --query id -o tsv)"\n\t\tadmin_type=User\n\telif ADMIN_PRINCIPAL_ID="$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)"; then admin_type=ServicePrincipal', "TestDeployUnderManagedIdentityLogin"),
 ("secret on command line", "infra/deploy.sh", "  KEY_VAULT_NAME=$vault infra/deploy.sh rotate token-encryption-key\n", '  az keyvault secret set --vault-name $vault --name token-encryption-key --value "\\$(openssl rand -base64 32)" --output none\n', "TestPrintedCommands"),
 ("GNU date -d in printed command", "infra/deploy.sh", '	echo "  KEY_VAULT_NAME=$vault MICROSOFT_CLIENT_ID=$client_id infra/deploy.sh rotate microsoft-client-secret"', '	echo "  az keyvault secret set --vault-name $vault --name microsoft-client-secret --expires \\"\\$(date -u -d \'+1 days\' +%Y-%m-%dT%H:%M:%SZ)\\" --file f"', "TestPrintedCommands"),
 ("GNU-only date_in_days", "infra/deploy.sh", 'date -u -d "+$1 days" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+"$1"d +%Y-%m-%dT%H:%M:%SZ', 'date -u -d "+$1 days" +%Y-%m-%dT%H:%M:%SZ', "TestRotateWithBSDDate"),
 ("rotation value on az argv", "infra/deploy.sh", '		put_secret "$1" "$(random_key)"\n', '		az keyvault secret set --vault-name "$vault" --name "$1" --value "$(random_key)" --output none\n', "TestRotate"),
 ("403 wording", "infra/deploy.sh", "|not authori[sz]ed|does not have authorization", "", "TestDeployRetriesEveryForbiddenWording"),
 ("fixed module names", "infra/main.bicep", "  name: '${deploymentPrefix}-storage'", "  name: 'msconnector-storage'", "TestModuleDeploymentNamesAreUnique"),
 ("accountName", "infra/main.bicep", "  AzureWebJobsStorage__blobServiceUri: 'https://${storage.outputs.name}.blob.${storageSuffix}'", "  AzureWebJobsStorage__accountName: storage.outputs.name", "TestAppSettingValues"),
 ("hard-coded core.windows.net", "infra/main.bicep", "'https://${storage.outputs.name}.queue.${storageSuffix}'", "'https://${storage.outputs.name}.queue.core.windows.net'", "TestLintRules/no-hardcoded-env-urls"),
 ("tenant id missing", "infra/main.bicep", "  MICROSOFT_APP_TENANT_ID: tenant().tenantId\n", "", "TestAppSettingValues"),
 ("make verify missing", "infra/deploy.sh", 'until make --no-print-directory -C "$repo_root" verify; do', 'until true; do', "TestDeployEndsWithVerify"),
 ("query names unknown field", "infra/queries/alert-throttling.kql", "op = tostring(d.op)", "op = tostring(d.operation)", "TestQueriesNameOnlyWhatTheCodeLogs"),
 ("query names unknown event", "infra/queries/alert-no-sweep.kql", '== "refresh_swept"', '== "refresh_sweep"', "TestQueriesNameOnlyWhatTheCodeLogs"),
 ("no AuditEvent", "infra/modules/keyvault.bicep", "category: 'AuditEvent'", "category: 'AllMetrics'", "TestDiagnosticSettings"),
]
for name, path, old, new, test in cases:
    s = open(path).read()
    if old not in s:
        print("SETUP FAIL (the fixed text moved; update this case)", name)
        failed = True
        continue
    open(path, 'w').write(s.replace(old, new))
    r = subprocess.run(["go", "test", "-count=1", "-run", test, "./infra/"], capture_output=True, text=True)
    open(path, 'w').write(s)
    first = [l for l in r.stdout.splitlines() if l.strip().startswith(("infra_test", "lint_test", "platform_test", "deploy", "monitoring", "graph"))][:1]
    if r.returncode == 0:
        failed = True
    print(("FAILS (good)" if r.returncode != 0 else "PASSES (BAD)"), "|", name, "|", test, "|", (first[0].strip()[:150] if first else ""))
sys.exit(1 if failed else 0)
