// Package infra holds the Azure deployment of the connector: main.bicep and
// its modules, main.bicepparam, the monitoring queries (queries/*.kql),
// deploy.sh, and tools/bicepsyntax.cjs. It has no Go code of its own; its
// tests check, without Azure or a Bicep compiler, that the Bicep parses and
// passes the linter rules bicepconfig.json raises (emulated from their
// documentation), that it keeps to what Flex Consumption accepts, that it
// agrees with the handler (settings, routes, callback URL, scopes, the events
// and fields the queries name), that role IDs are right, that no secret is
// set or output, and that deploy.sh behaves against a stand-in az CLI. They
// never touch handler code, and fail when a source they compare with is
// missing.
package infra
