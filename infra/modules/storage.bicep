// Storage for the Functions host (AzureWebJobsStorage: leases, timer
// monitor), the deployment package container, and the handler's tables.
// Shared keys are off: every caller uses the managed identity. The queues
// carry the webhook deliveries (WEBHOOK_QUEUE, functions/webhook).

import { roleIds } from 'roles.bicep'

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Blob container the Flex Consumption platform deploys the package from.')
param deploymentContainerName string

@description('Principal ID of the function app identity.')
param principalId string

@description('Queues to create: the webhook deliveries queue and its poison queue, where the host moves a message after maxDequeueCount failed attempts (kept for replay, docs/operations.md).')
param queueNames array

@description('Storage redundancy.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param skuName string = 'Standard_LRS'

// The handler also creates these when missing; creating them here makes a
// fresh deployment complete before the first request.
var tableNames = [
  'connections'
  'connectsessions'
]

// Storage Queue Data Contributor covers both the host's queue trigger
// (read, delete, move to the poison queue) and the handler's enqueue.
var storageRoles = [
  roleIds.storageBlobDataOwner
  roleIds.storageQueueDataContributor
  roleIds.storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  // The queue trigger creates a missing poison queue itself; creating both
  // here lets an operator look at them (and replay) before the first failure.
  resource queueService 'queueServices' = {
    name: 'default'

    resource queues 'queues' = [
      for queueName in queueNames: {
        name: queueName
      }
    ]
  }

  resource tableService 'tableServices' = {
    name: 'default'

    resource tables 'tables' = [
      for tableName in tableNames: {
        name: tableName
      }
    ]
  }
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoles: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

@description('Storage account name: AzureWebJobsStorage__accountName.')
output name string = storage.name

@description('Table service endpoint: TABLES_ENDPOINT.')
output tableEndpoint string = storage.properties.primaryEndpoints.table

@description('URL of the deployment package container.')
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
