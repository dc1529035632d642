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

// Key Vault Secrets Officer for whoever deploys: deploy.sh exports the
// signed-in principal's object ID so it can store the generated secrets.
param adminPrincipalId = readEnvironmentVariable('ADMIN_PRINCIPAL_ID', '')
param adminPrincipalType = readEnvironmentVariable('ADMIN_PRINCIPAL_TYPE', 'User')
