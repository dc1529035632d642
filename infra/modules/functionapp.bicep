// The Flex Consumption plan (FC1, Linux) and the function app running the Go
// custom handler. App settings are set afterwards by appsettings.bicep: they
// need the client ID of the app registration, which needs this app's host name.
//
// Never set here (Flex rejects or ignores them): FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENT*,
// linuxFxVersion, TZ. The runtime is functionAppConfig.runtime; the package
// comes from functionAppConfig.deployment.

@description('Flex Consumption plan name.')
param planName string

@description('Function app name (globally unique: <name>.azurewebsites.net).')
param appName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Resource ID of the user-assigned identity the app runs as.')
param identityId string

@description('URL of the blob container the platform deploys the package from.')
param deploymentContainerUrl string

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

@description('Function app name.')
output name string = site.name

@description('Default host name, e.g. <name>.azurewebsites.net.')
output defaultHostName string = site.properties.defaultHostName
