// The Microsoft Entra app registration users consent to, as code (Microsoft
// Graph Bicep extension), its service principal in this tenant, and in
// managed_identity mode the federated identity credential that lets the
// function app's user-assigned identity authenticate as the app: no client
// secret exists anywhere.
//
// The deploying principal needs Application.ReadWrite.All (delegated) or a
// directory role that includes it, such as Application Developer (docs/deploy.md).

extension microsoftGraphV1

@description('Immutable alternate key of the application; keeps redeployments updating the same registration.')
param uniqueName string

@description('Name users see on the consent prompt.')
param displayName string

@description('Who can sign in: AzureADandPersonalMicrosoftAccount (work, school and personal accounts), AzureADMultipleOrgs (work and school, any tenant) or AzureADMyOrg (this tenant only).')
@allowed([
  'AzureADandPersonalMicrosoftAccount'
  'AzureADMultipleOrgs'
  'AzureADMyOrg'
])
param signInAudience string

@description('The function\'s callback URL, registered as the only Web redirect URI.')
param redirectUri string

@description('Principal (object) ID of the user-assigned identity to trust as a federated credential. Empty: none (secret mode).')
param federatedIdentityPrincipalId string

@description('Issuer of the identity\'s tokens: this cloud\'s login endpoint followed by <tenant-id>/v2.0.')
param federatedIdentityIssuer string

@description('Object IDs made owners of the application (added to, never replacing, the owners it has): the deploying principal, so a later deployment by another admin can still update it.')
param ownerObjectIds array

// Microsoft Graph's application ID, the same in every tenant.
var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'

// Entra ID's token exchange audience in the global cloud.
var tokenExchangeAudience = 'api://AzureADTokenExchange'

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: signInAudience
  notes: 'Managed by the MEGDocs Microsoft connector deployment (infra/main.bicep). Changes made in the portal are overwritten by the next deployment.'
  // A relationship: the IDs are added to the owners ("append" is the default
  // relationshipSemantics), so each admin who deploys becomes an owner and
  // nobody is removed. learn.microsoft.com/graph/templates/concept-relationships-in-graph-types
  owners: {
    relationships: ownerObjectIds
  }
  api: {
    // Required for personal Microsoft accounts; harmless for the others.
    requestedAccessTokenVersion: 2
  }
  // Web platform only: a SPA redirect URI would cap refresh tokens at 24 hours.
  web: {
    redirectUris: [
      redirectUri
    ]
    implicitGrantSettings: {
      enableAccessTokenIssuance: false
      enableIdTokenIssuance: false
    }
  }
  requiredResourceAccess: [
    {
      resourceAppId: microsoftGraphAppId
      resourceAccess: [
        {
          id: 'e1fe6dd8-ba31-4d61-89e7-88639da4683d' // User.Read
          type: 'Scope'
        }
        {
          id: '863451e7-0667-486c-a5d6-d135439485f0' // Files.ReadWrite.All
          type: 'Scope'
        }
        {
          id: '7427e0e9-2fba-42fe-b0c0-848c9e6a8182' // offline_access
          type: 'Scope'
        }
        {
          id: '37f7f235-527c-4136-accd-4a02d197296e' // openid
          type: 'Scope'
        }
        {
          id: '14dad69e-099b-42c9-810b-d002981feec1' // profile
          type: 'Scope'
        }
      ]
    }
  ]

  resource functionIdentityCredential 'federatedIdentityCredentials@v1.0' = if (!empty(federatedIdentityPrincipalId)) {
    name: '${application.uniqueName}/msconnector-function-identity'
    description: 'The MEGDocs Microsoft connector function app (user-assigned managed identity) authenticates as this application.'
    issuer: federatedIdentityIssuer
    subject: federatedIdentityPrincipalId
    audiences: [
      tokenExchangeAudience
    ]
  }
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
}

@description('Application (client) ID: MICROSOFT_CLIENT_ID.')
output clientId string = application.appId

@description('Object ID of the application.')
output applicationObjectId string = application.id

@description('Object ID of the service principal in this tenant.')
output servicePrincipalObjectId string = servicePrincipal.id
