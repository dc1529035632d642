// Package browsertest is the newcomer's first ten minutes as a test: a real
// headless Chromium (Debian's chromium, driven with chromedp) clicks through
// the demo CMS page against the whole local stack that `make run` starts
// (devstack: Azurite, the Microsoft stand-in, the real handler). The normal
// path: log in as mara, connect, pick an account, see "Connected as ...",
// fetch a token, call Graph /me, revoke the account on the stand-in, see
// reconnect_required, disconnect. The attack path: mara creates a connect
// link, the browser switches to victor, opens it and signs in: the page says
// the sign-in was started by another MEGDocs user, and the connector (asked
// as the CMS would) has nothing for either user, not even after mara tries
// the same return URL.
//
// It holds only tests. `make test` and `make e2e` run them; each step leaves
// a PNG screenshot under testoutput/browser/ at the repository root
// (normal-NN-*.png, attack-NN-*.png). The
// browser only ever talks to loopback: every other host name fails to
// resolve inside it.
//
// A missing chromium fails the test (run `make test-deps`); SKIP_BROWSER=1
// is the one explicit opt-out. Development tooling: never packaged.
package browsertest
