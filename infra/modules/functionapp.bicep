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

@description('Most instances the app scales out to: Flex Consumption accepts 40 to 1000.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Resource ID of the Log Analytics workspace that receives the function app\'s logs (FunctionAppLogs).')
param logAnalyticsWorkspaceId string

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
    // Only minTlsVersion: FC1 sites reject other site configuration such as
    // ftpsState (BadRequest, extended code 51021, "site configuration
    // properties ... for Flex Consumption sites is invalid"); FTP is not
    // offered on Flex Consumption at all.
    siteConfig: {
      minTlsVersion: '1.2'
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

// The host's own log (every invocation, worker start and crash, and the
// handler's stdout lines) in the workspace's FunctionAppLogs table, next to
// Application Insights' AppTraces. Category: Microsoft.Web/sites supported logs
// (learn.microsoft.com/azure/azure-monitor/reference/supported-logs/microsoft-web-sites-logs).
// Whether Flex Consumption emits this category is not proven here (docs/deploy.md).
resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs-to-log-analytics'
  scope: site
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

@description('Function app name.')
output name string = site.name

@description('Default host name, e.g. <name>.azurewebsites.net.')
output defaultHostName string = site.properties.defaultHostName
