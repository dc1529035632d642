// The vault holding the handler's secrets (token-encryption-key, cms-api-key,
// and in secret mode microsoft-client-secret). RBAC only: no access policies.
// The handler reads secrets with the SDK, not Key Vault references, so a new
// version takes effect without a restart.

import { roleIds } from 'roles.bicep'

@description('Key Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Principal ID of the function app identity (Key Vault Secrets User).')
param principalId string

@description('Purge protection: a deleted vault or secret cannot be purged before the retention ends. It cannot be turned off once on.')
param enablePurgeProtection bool

@description('Days a deleted vault or secret stays recoverable (7-90). Fixed when the vault is created.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int

@description('Object ID of the admin who sets and rotates secrets (Key Vault Secrets Officer). Empty: no assignment.')
param adminPrincipalId string

@description('Principal type of adminPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param adminPrincipalType string

@description('Resource ID of the Log Analytics workspace that receives the vault\'s audit log (AuditEvent).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Key Vault rejects false here: purge protection is either on or absent.
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(adminPrincipalId)) {
  name: guid(vault.id, adminPrincipalId, roleIds.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsOfficer)
    principalId: adminPrincipalId
    principalType: adminPrincipalType
  }
}

// Every read and change of a secret (who, from where, which secret and
// version) goes to Log Analytics: the AzureDiagnostics table, Category ==
// "AuditEvent". Category name: Key Vault's supported log categories
// (learn.microsoft.com/azure/azure-monitor/reference/supported-logs/microsoft-keyvault-vaults-logs).
// API version: Azure/bicep-types-az, insights microsoft.insights/diagnosticSettings 2021-05-01-preview.
resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

@description('Vault name.')
output name string = vault.name

@description('Vault URI: KEY_VAULT_URL.')
output uri string = vault.properties.vaultUri
