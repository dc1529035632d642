// Parameters `make deploy` uses for MEGDocs (audits.megsupporttools.com).
// Copy this file for another region or customer and pass it as
// DEPLOY_PARAMS=infra/<file>.bicepparam; every parameter is described in
// main.bicep and docs/deploy.md.
using './main.bicep'

param name = 'megdocs-ms'

// Where the CMS may send users back after connecting (prefixes, comma-separated).
param allowedReturnUrls = 'https://audits.megsupporttools.com/accounts/settings/'

// Work and school accounts in any tenant, with no client secret anywhere:
// the function app's managed identity is the app registration's credential.
// To let personal Microsoft accounts (personal OneDrive) connect too, set
// signInAudience = 'AzureADandPersonalMicrosoftAccount'; clientAuth then
// defaults to 'secret', because Microsoft does not document managed-identity
// federated credentials for personal accounts (docs/deploy.md).
param signInAudience = 'AzureADMultipleOrgs'
param clientAuth = 'managed_identity'

param appRegistrationDisplayName = 'MEGDocs Microsoft Integration'

// The old path: keep an app registration made by hand with the setup guide.
// Nothing is created in Entra ID and a client secret in Key Vault is used.
// param existingClientId = '<application (client) id>'

// Optional: connection status webhook to the CMS.
// param cmsWebhookUrl = '<the CMS webhook URL, https>'

param enablePurgeProtection = true

// Key Vault Secrets Officer: empty means whoever deploys (deployer(), also
// under az login --identity), so deploy.sh can store the generated secrets.
// ADMIN_PRINCIPAL_ID names someone else (a group, say); deploy.sh exports
// ADMIN_PRINCIPAL_TYPE for the signed-in principal's kind.
param adminPrincipalId = readEnvironmentVariable('ADMIN_PRINCIPAL_ID', '')
param adminPrincipalType = readEnvironmentVariable('ADMIN_PRINCIPAL_TYPE', 'User')

// Where the alerts go (docs/operations.md). Empty: alerts without a receiver.
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')

// Set to a new value only when redeploying into a resource group that was
// deleted less than softDeleteRetentionInDays ago (docs/deploy.md).
param keyVaultNameSalt = readEnvironmentVariable('KEY_VAULT_NAME_SALT', '')
