// The function app's one identity. It reads host storage, the tables and the
// vault, publishes telemetry, and is the federated credential the app
// registration trusts (MICROSOFT_CLIENT_AUTH=managed_identity): only a
// user-assigned identity can be a federated credential, so there is no
// system-assigned identity to keep in step with it.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource ID, for the function app identity and deployment storage authentication.')
output id string = identity.id

@description('Client ID: AZURE_CLIENT_ID and AzureWebJobsStorage__clientId.')
output clientId string = identity.properties.clientId

@description('Principal (object) ID: role assignments and the federated credential subject.')
output principalId string = identity.properties.principalId
