// MEGDocs Microsoft connector: everything it runs on, in one resource group.
//
//   identity      user-assigned managed identity: the app's only identity
//   storage       host storage, deployment container, connections/connectsessions tables
//   keyVault      secrets (RBAC, soft delete, purge protection by parameter)
//   monitoring    Log Analytics + Application Insights (Entra ID auth only)
//   functionApp   Flex Consumption plan + function app (custom handler)
//   registration  Microsoft Entra app registration, service principal and
//                 federated credential (Microsoft Graph Bicep extension), unless
//                 existingClientId names a registration made by hand
//   settings      the app settings, once every value above is known
//
// Deploy with `make deploy` (infra/deploy.sh); docs/deploy.md explains each
// parameter and the one manual step left: admin consent where a tenant needs it.

targetScope = 'resourceGroup'

metadata description = 'MEGDocs Microsoft connector on Azure Functions Flex Consumption'

// ---- naming and placement ----

@description('Short name the resource names derive from (lowercase letters, digits and hyphens).')
@minLength(3)
@maxLength(20)
param name string = 'megdocs-ms'

@description('Azure region. Must offer Flex Consumption.')
param location string = resourceGroup().location

@description('Tags for every Azure resource.')
param tags object = {
  application: 'megdocs-msconnector'
}

@description('Function app name; it becomes <name>.azurewebsites.net, so it must be globally unique.')
@minLength(2)
@maxLength(60)
param functionAppName string = 'func-${name}-${uniqueString(resourceGroup().id)}'

@description('Host name browsers use to reach the function when a custom domain is bound to it (the binding is not made here). Empty: the function app\'s default host name. The redirect URI and connect links use it.')
param publicHostName string = ''

// ---- Microsoft sign-in ----

@description('Who can connect: AzureADandPersonalMicrosoftAccount (work, school and personal accounts), AzureADMultipleOrgs (work and school accounts in any tenant) or AzureADMyOrg (this tenant only).')
@allowed([
  'AzureADandPersonalMicrosoftAccount'
  'AzureADMultipleOrgs'
  'AzureADMyOrg'
])
param signInAudience string = 'AzureADandPersonalMicrosoftAccount'

@description('How the service authenticates as the app registration: managed_identity (federated credential, no secret) or secret (a client secret in Key Vault). Default: managed_identity for work and school audiences; secret when personal accounts can sign in, for which Microsoft does not document managed-identity federated credentials. Always secret with existingClientId.')
@allowed([
  'managed_identity'
  'secret'
])
param clientAuth string = signInAudience == 'AzureADandPersonalMicrosoftAccount' ? 'secret' : 'managed_identity'

@description('Application (client) ID of an app registration made by hand (the old setup guide). Set: no registration is created or changed, and client authentication is secret. Empty: the registration is created and kept up to date here.')
param existingClientId string = ''

@description('Display name of the app registration, shown on the consent prompt.')
param appRegistrationDisplayName string = 'MEGDocs Microsoft Integration'

@description('Immutable unique name of the app registration; keep it stable so redeployments update the same registration.')
param appRegistrationUniqueName string = 'megdocs-msconnector-${uniqueString(resourceGroup().id)}'

@description('MICROSOFT_TENANT. Empty: derived from signInAudience (common, organizations, or this tenant\'s ID).')
param microsoftTenant string = ''

@description('MICROSOFT_AUTHORITY_HOST. Empty: the login endpoint of this cloud, from environment().')
param microsoftAuthorityHost string = ''

@description('MICROSOFT_GRAPH_URL.')
param microsoftGraphUrl string = 'https://graph.microsoft.com'

// ---- the CMS ----

@description('ALLOWED_RETURN_URLS: comma-separated URL prefixes the CMS may send users back to, e.g. https://audits.megsupporttools.com/accounts/settings/.')
@minLength(1)
param allowedReturnUrls string

@description('PUBLIC_BASE_URL: base of the connect links. Empty: https://<public host name>.')
param publicBaseUrl string = ''

@description('CMS_WEBHOOK_URL: where connection status changes are POSTed. Empty: no webhook (the setting is not set).')
param cmsWebhookUrl string = ''

// ---- refresh and caching (contract defaults) ----

@description('REFRESH_SCHEDULE: six-field NCRONTAB schedule (UTC) of the refresh timer.')
param refreshSchedule string = '0 */5 * * * *'

@description('REFRESH_MARGIN: the token API refreshes when the access token expires within this.')
param refreshMargin string = '5m'

@description('REFRESH_MAX_AGE: the timer refreshes any connection not refreshed for this long.')
param refreshMaxAge string = '24h'

@description('REFRESH_LOOKAHEAD: the timer pre-refreshes recently used tokens expiring within this.')
param refreshLookahead string = '10m'

@description('REFRESH_CONCURRENCY: parallel calls to Microsoft during a sweep.')
@minValue(1)
@maxValue(256)
param refreshConcurrency int = 16

@description('REFRESH_DEADLINE: a sweep stops starting work after this; keep it well below host.json functionTimeout (10 minutes).')
param refreshDeadline string = '4m'

// Not named secrets...: the linter rule secure-secrets-in-params (error in
// bicepconfig.json) flags any string parameter whose name contains "secret"
// and would stop every build and deployment; this holds a duration, not a secret.
@description('SECRETS_CACHE_TTL: how long a value read from Key Vault is used before it is read again.')
param keyVaultCacheTtl string = '5m'

// ---- hosting ----

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// Flex Consumption accepts 40 to 1000 (default 100) for the custom stack:
// az functionapp list-flexconsumption-runtimes --runtime custom (the Az.Functions
// module's FunctionsStackFlexData/<region>/custom.json).
@description('Most instances the app scales out to (40-1000 on Flex Consumption).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// ---- Key Vault ----

@description('Key Vault purge protection. Recommended in production; once on it cannot be turned off, and a deleted vault name stays taken for the retention period.')
param enablePurgeProtection bool = true

@description('Days a deleted vault or secret stays recoverable (7-90); fixed when the vault is created.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Object ID of the admin who sets and rotates secrets: gets Key Vault Secrets Officer on the vault. Empty: whoever runs the deployment (deployer()), a user, service principal or managed identity.')
param adminPrincipalId string = ''

@description('Principal type of adminPrincipalId (or of the deploying principal when it is empty).')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param adminPrincipalType string = 'User'

@description('Changes the Key Vault name. A deleted vault keeps its name for softDeleteRetentionInDays (90 by default; with purge protection it cannot be purged sooner), so redeploying into a re-created resource group of the same name fails with "already exists in deleted state". Set any new value (e.g. 2) to get a fresh vault name; empty keeps the original name. docs/deploy.md explains why this is preferred to recovering the old vault.')
@maxLength(20)
param keyVaultNameSalt string = ''

// ---- monitoring ----

@description('Email address the alerts are sent to (action group). Empty: the alerts are created without a receiver; add one to the action group later.')
param alertEmail string = ''

@description('Create the log search alerts and the workbook (docs/operations.md).')
param enableAlerts bool = true

// ---- webhook deliveries ----

@description('WEBHOOK_QUEUE: the Storage queue that holds webhook deliveries; <name>-poison keeps the ones the host gave up on.')
@minLength(3)
@maxLength(56)
param webhookQueueName string = 'webhook-deliveries'

// ---- derived values ----

var suffix = uniqueString(resourceGroup().id)
// An empty salt keeps the name every earlier deployment used.
var keyVaultSuffix = empty(keyVaultNameSalt) ? suffix : uniqueString(resourceGroup().id, keyVaultNameSalt)
var compactName = toLower(replace(name, '-', ''))
var names = {
  identity: 'id-${name}'
  storage: 'st${take(compactName, 9)}${suffix}'
  keyVault: 'kv${take(compactName, 9)}${keyVaultSuffix}'
  logAnalytics: 'log-${name}'
  applicationInsights: 'appi-${name}'
  plan: 'plan-${name}'
  actionGroup: 'ag-${name}'
  deploymentContainer: 'app-package'
}

// https://login.microsoftonline.com/ in Azure public; the issuer of the
// identity's tokens is <this><tenant-id>/v2.0.
var loginEndpoint = environment().authentication.loginEndpoint
var authorityHost = empty(microsoftAuthorityHost)
  ? (endsWith(loginEndpoint, '/') ? substring(loginEndpoint, 0, length(loginEndpoint) - 1) : loginEndpoint)
  : microsoftAuthorityHost

// Whoever runs the deployment (a user, a service principal, or a managed
// identity under `az login --identity`): Key Vault Secrets Officer unless
// adminPrincipalId names someone else, and an owner of the app registration
// so that a later deployment by another admin can still update it.
// Source: learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-deployment#deployer
var deployerObjectId = deployer().objectId
var adminObjectId = empty(adminPrincipalId) ? deployerObjectId : adminPrincipalId

// Host storage service URIs for this cloud (core.windows.net in Azure public,
// core.chinacloudapi.cn in Azure China, ...): no hard-coded host.
var storageSuffix = environment().suffixes.storage

// Module deployments are resources of the resource group: a fixed name makes
// two deployments running at once overwrite each other's module deployments.
// Deriving them from this deployment's own (unique) name keeps them apart.
var deploymentPrefix = take(deployment().name, 40)

var createAppRegistration = empty(existingClientId)
var clientAuthMode = createAppRegistration ? clientAuth : 'secret'

// The scopes the handler requests (openid and profile are added by it). The
// registration's requiredResourceAccess lists the same five permissions.
var microsoftScopes = 'User.Read Files.ReadWrite.All offline_access'

var derivedTenant = signInAudience == 'AzureADMyOrg'
  ? tenant().tenantId
  : (signInAudience == 'AzureADMultipleOrgs' ? 'organizations' : 'common')

var publicHost = empty(publicHostName) ? functionApp.outputs.defaultHostName : publicHostName

// The redirect URI: registered on the app, sent by the handler verbatim, and
// served by functions/callback (route prefix api).
var callbackUrl = 'https://${publicHost}/api/callback'

var clientId = createAppRegistration ? registration!.outputs.clientId : existingClientId

// ---- resources ----

module identity 'modules/identity.bicep' = {
  name: '${deploymentPrefix}-identity'
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: '${deploymentPrefix}-storage'
  params: {
    name: names.storage
    location: location
    tags: tags
    deploymentContainerName: names.deploymentContainer
    principalId: identity.outputs.principalId
    queueNames: [
      webhookQueueName
      '${webhookQueueName}-poison'
    ]
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: '${deploymentPrefix}-keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    enablePurgeProtection: enablePurgeProtection
    softDeleteRetentionInDays: softDeleteRetentionInDays
    adminPrincipalId: adminObjectId
    adminPrincipalType: adminPrincipalType
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: '${deploymentPrefix}-monitoring'
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    principalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: '${deploymentPrefix}-functionapp'
  params: {
    planName: names.plan
    appName: functionAppName
    location: location
    tags: tags
    identityId: identity.outputs.id
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

module alerts 'modules/alerts.bicep' = if (enableAlerts) {
  name: '${deploymentPrefix}-alerts'
  params: {
    name: 'alert-${name}'
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    actionGroupName: names.actionGroup
    alertEmail: alertEmail
    workbookDisplayName: 'MEGDocs Microsoft connector (${name})'
  }
}

module registration 'modules/app-registration.bicep' = if (createAppRegistration) {
  name: '${deploymentPrefix}-app-registration'
  params: {
    uniqueName: appRegistrationUniqueName
    displayName: appRegistrationDisplayName
    signInAudience: signInAudience
    redirectUri: callbackUrl
    federatedIdentityPrincipalId: clientAuthMode == 'managed_identity' ? identity.outputs.principalId : ''
    federatedIdentityIssuer: '${loginEndpoint}${tenant().tenantId}/v2.0'
    ownerObjectIds: [
      deployerObjectId
    ]
  }
}

var appSettings = {
  // Host storage through the user-assigned identity; no connection string.
  // Service URIs rather than __accountName: the host would build
  // *.core.windows.net from an account name, which is wrong outside Azure public.
  AzureWebJobsStorage__blobServiceUri: 'https://${storage.outputs.name}.blob.${storageSuffix}'
  // Also the queue of the webhook deliveries: the host's queue trigger
  // (functions/webhook) and the handler's enqueue both use it.
  AzureWebJobsStorage__queueServiceUri: 'https://${storage.outputs.name}.queue.${storageSuffix}'
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // Entra ID authenticated telemetry (the connection string is added by appsettings.bicep).
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  // DefaultAzureCredential (Key Vault, Tables) and the federated credential use this identity.
  AZURE_CLIENT_ID: identity.outputs.clientId
  KEY_VAULT_URL: keyVault.outputs.uri
  TABLES_ENDPOINT: storage.outputs.tableEndpoint
  MICROSOFT_CLIENT_ID: clientId
  MICROSOFT_CLIENT_AUTH: clientAuthMode
  MICROSOFT_OAUTH_CALLBACK_URL: callbackUrl
  MICROSOFT_TENANT: empty(microsoftTenant) ? derivedTenant : microsoftTenant
  // The app registration's home tenant: GET /api/diagnostics asks it for a
  // client-credentials token to check the app's own credential.
  MICROSOFT_APP_TENANT_ID: tenant().tenantId
  MICROSOFT_AUTHORITY_HOST: authorityHost
  MICROSOFT_GRAPH_URL: microsoftGraphUrl
  MICROSOFT_SCOPES: microsoftScopes
  ALLOWED_RETURN_URLS: allowedReturnUrls
  PUBLIC_BASE_URL: empty(publicBaseUrl) ? 'https://${publicHost}' : publicBaseUrl
  REFRESH_SCHEDULE: refreshSchedule
  REFRESH_MARGIN: refreshMargin
  REFRESH_MAX_AGE: refreshMaxAge
  REFRESH_LOOKAHEAD: refreshLookahead
  REFRESH_CONCURRENCY: string(refreshConcurrency)
  REFRESH_DEADLINE: refreshDeadline
  SECRETS_CACHE_TTL: keyVaultCacheTtl
  WEBHOOK_QUEUE: webhookQueueName
}

// Unset rather than empty when there is no webhook.
var webhookSettings = empty(cmsWebhookUrl)
  ? {}
  : {
      CMS_WEBHOOK_URL: cmsWebhookUrl
    }

module settings 'modules/appsettings.bicep' = {
  name: '${deploymentPrefix}-appsettings'
  params: {
    siteName: functionApp.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    settings: union(appSettings, webhookSettings)
  }
}

// ---- outputs (names and URLs only; never a secret) ----

@description('Function app name, for az functionapp commands and the zip deployment.')
output functionAppName string = functionApp.outputs.name

@description('Base URL of the function: connect links and the CMS API live under it.')
output functionBaseUrl string = 'https://${publicHost}'

@description('The exact redirect URI registered on the app registration (and MICROSOFT_OAUTH_CALLBACK_URL).')
output redirectUri string = callbackUrl

@description('Key Vault name, for az keyvault secret set.')
output keyVaultName string = keyVault.outputs.name

@description('Application (client) ID in MICROSOFT_CLIENT_ID.')
output microsoftClientId string = clientId

@description('MICROSOFT_CLIENT_AUTH: managed_identity or secret.')
output clientAuthMode string = clientAuthMode

@description('True when this deployment created and manages the app registration.')
output appRegistrationManaged bool = createAppRegistration

@description('Client ID of the function app\'s user-assigned identity (AZURE_CLIENT_ID).')
output managedIdentityClientId string = identity.outputs.clientId

@description('Tenant of the deployment and the app registration.')
output tenantId string = tenant().tenantId

@description('Who can connect (signInAudience).')
output signInAudience string = signInAudience

@description('The monitoring workbook (dashboard) in the Azure portal; none when enableAlerts is false.')
output dashboardUrl string = enableAlerts ? '${environment().portal}/#@${tenant().tenantId}/resource${alerts!.outputs.workbookId}/workbook' : 'none'

@description('True when CMS_WEBHOOK_URL is set (deploy.sh then creates cms-webhook-secret).')
output cmsWebhookEnabled bool = !empty(cmsWebhookUrl)
