// Sets the function app's application settings in one place, once every value
// is known. This replaces the whole settings collection: a setting added in
// the portal is removed by the next deployment.

@description('Function app name.')
param siteName string

@description('Application Insights component name; its connection string is read here, never passed as an output.')
param applicationInsightsName string

@description('Every other application setting (names and values; no secrets).')
param settings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(settings, {
    // Not a secret: with DisableLocalAuth the component accepts only Entra ID
    // authenticated telemetry (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  })
}
