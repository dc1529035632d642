// Package browsertest is the newcomer's first ten minutes as a test: a real
// headless Chromium (Debian's chromium, driven with chromedp) clicks through
// the demo CMS page against the whole local stack that `make run` starts
// (devstack: Azurite, the Microsoft stand-in, the real handler). Connect,
// pick an account, see "Connected", fetch a token, call Graph /me, revoke
// the account on the stand-in, see reconnect_required, disconnect.
//
// It holds only tests. `make test` and `make e2e` run them; each step leaves
// a PNG screenshot under testoutput/browser/ at the repository root. The
// browser only ever talks to loopback: every other host name fails to
// resolve inside it.
//
// A missing chromium fails the test (run `make test-deps`); SKIP_BROWSER=1
// is the one explicit opt-out. Development tooling: never packaged.
package browsertest
