// Package infra holds the Azure deployment of the connector: main.bicep and
// its modules, main.bicepparam, deploy.sh, and tools/bicepsyntax.cjs. It has
// no Go code of its own; its tests check, without Azure, that the Bicep
// parses, that it agrees with the handler (settings, routes, callback URL,
// scopes), that role IDs are right, that no secret is set or output, and that
// deploy.sh behaves against a stand-in az CLI. They never touch handler code.
package infra
