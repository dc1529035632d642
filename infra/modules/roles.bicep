// Built-in Azure role definitions this deployment assigns. The IDs are the same
// in every tenant; infra/infra_test.go checks them against the list in
// docs/deploy.md and checks which scope each role is assigned at.

@export()
@description('Built-in role definition IDs, by role.')
var roleIds = {
  // Storage Blob Data Owner: host storage (AzureWebJobsStorage, timer leases) and the deployment package container.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Storage Queue Data Contributor: host storage.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Storage Table Data Contributor: the connections and connectsessions tables.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Monitoring Metrics Publisher: Entra ID authenticated ingestion into Application Insights.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Key Vault Secrets User: the handler reads its secrets.
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // Key Vault Secrets Officer: the deploying admin sets and rotates secrets (optional).
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}
