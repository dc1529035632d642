// Package cmsclienttest runs the Python CMS client's tests
// (docs/cms-client/test_client.py) against the real handler, so the client
// that docs/cms-integration.md tells the Django side to copy is checked
// against the contract as it is served, not as it is described.
//
// Its test starts the local stack (devstack, without the demo page), connects
// users through the Microsoft stand-in in Go, records one real webhook
// delivery, leaves two signed-in connects for the client's complete() (one
// for its own user, one to be refused as user_mismatch), and then runs the
// Python tests with their environment set.
//
// It holds only tests. It needs python3 with the requests package (`make
// test-deps` installs Debian's python3-requests); a missing one fails the
// test unless SKIP_PYTHON=1. Development tooling: never packaged.
package cmsclienttest
