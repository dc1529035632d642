"""Tests of megdocs_connector.py against a running connector.

`make test` runs them from Go (handler/internal/cmsclienttest), which starts
the local stack, connects users and sets:

    CONNECTOR_URL       the connector's base URL
    CMS_API_KEY         its CMS API key
    CONNECTED_USER_ID   a user connected with CONNECTED_EMAIL (disconnected by the last test)
    CONNECTED_EMAIL     that user's Microsoft account
    RECONNECT_USER_ID   a user whose account was revoked: reconnect_required
    RETURN_URL          a return URL the connector allows
    COMPLETE_USER_ID, COMPLETE_CODE, COMPLETE_EMAIL
                        a connect_code signed in with COMPLETE_EMAIL for that user,
                        not yet completed
    MISMATCH_STARTED_BY, MISMATCH_CODE, MISMATCH_OTHER_USER
                        a connect_code started by one user (not yet completed),
                        and another user who must not be able to complete it
    WEBHOOK_SECRET, WEBHOOK_BODY_FILE, WEBHOOK_SIGNATURE, WEBHOOK_DELIVERY
                        the secret and one real delivery the connector sent
    STRICT=1            fail, rather than skip, a test whose variables are missing

By hand, against `make run` (after connecting mara in the demo page):

    CONNECTOR_URL=http://localhost:7071 CMS_API_KEY=... CONNECTED_USER_ID=mara \\
        CONNECTED_EMAIL=ada@contoso.com python3 docs/cms-client/test_client.py
"""

import base64
import datetime
import http.server
import itertools
import json
import os
import socket
import sys
import threading
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from megdocs_connector import (  # noqa: E402
    ConnectorClient,
    ConnectorError,
    InvalidConnectCode,
    NotConfigured,
    NotConnected,
    ReconnectRequired,
    TemporarilyUnavailable,
    UserMismatch,
    encode_user_id,
    is_valid_user_id,
    verify_webhook,
)


def env(test, *names):
    """The variables' values; skips the test (fails it under STRICT=1) when
    one is missing."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        msg = "needs " + ", ".join(missing)
        if os.environ.get("STRICT") == "1":
            test.fail(msg)
        test.skipTest(msg)
    return [os.environ[n] for n in names]


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def now():
    return datetime.datetime.now(datetime.timezone.utc)


class ConnectorTest(unittest.TestCase):
    def setUp(self):
        url, key = env(self, "CONNECTOR_URL", "CMS_API_KEY")
        self.client = ConnectorClient(url, key)
        self.url, self.key = url, key


class ConnectedUserTests(ConnectorTest):
    def test_status(self):
        user, email = env(self, "CONNECTED_USER_ID", "CONNECTED_EMAIL")
        got = self.client.status(user)
        self.assertEqual(got["user_id"], user)
        self.assertEqual(got["status"], "connected")
        self.assertEqual(got["account"]["email"], email)
        self.assertIsNone(got["last_error"])
        self.assertIn("User.Read", got["scopes"])
        self.assertFalse({"access_token", "refresh_token"} & got.keys(), "the status must never hold a token")

    def test_get_token(self):
        (user,) = env(self, "CONNECTED_USER_ID")
        got = self.client.get_token(user)
        self.assertTrue(got["access_token"])
        self.assertEqual(got["token_type"], "Bearer")
        self.assertGreater(parse_time(got["expires_at"]), now())
        self.assertNotIn("refresh_token", got)

    def test_list_connections_pages(self):
        (user,) = env(self, "CONNECTED_USER_ID")
        # Bounded: a client that lost the cursor would page forever.
        ids = [c["user_id"] for c in itertools.islice(self.client.list_connections(limit=1), 1000)]
        self.assertEqual(len(ids), len(set(ids)), f"a connection came twice across pages: {ids[:10]}")
        self.assertIn(user, ids)

    def test_list_reconnect_required(self):
        user, connected = env(self, "RECONNECT_USER_ID", "CONNECTED_USER_ID")
        found = list(self.client.list_connections(status="reconnect_required"))
        self.assertIn(user, [c["user_id"] for c in found])
        self.assertNotIn(connected, [c["user_id"] for c in found])
        self.assertTrue(all(c["status"] == "reconnect_required" for c in found), found)

    def test_create_connect_session(self):
        (return_url,) = env(self, "RETURN_URL")
        got = self.client.create_connect_session("python-client-test", return_url, login_hint="ada@contoso.com")
        self.assertTrue(got["connect_url"].startswith(self.url.rstrip("/") + "/api/connect?session="), got)
        expires = parse_time(got["expires_at"])
        self.assertGreater(expires, now())
        self.assertLessEqual(expires, now() + datetime.timedelta(minutes=11))


class ErrorTests(ConnectorTest):
    def test_unknown_user_is_not_connected(self):
        user = "never-connected-" + uuid.uuid4().hex
        with self.assertRaises(NotConnected) as cm:
            self.client.status(user)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_connected"))
        with self.assertRaises(NotConnected):
            self.client.get_token(user)

    def test_reconnect_required(self):
        (user,) = env(self, "RECONNECT_USER_ID")
        with self.assertRaises(ReconnectRequired) as cm:
            self.client.get_token(user)
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "reconnect_required"))
        self.assertEqual(self.client.status(user)["status"], "reconnect_required")

    def test_wrong_key(self):
        (user,) = env(self, "CONNECTED_USER_ID")
        with self.assertRaises(ConnectorError) as cm:
            ConnectorClient(self.url, self.key + "-wrong").status(user)
        self.assertIs(type(cm.exception), ConnectorError)
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))

    def test_disallowed_return_url(self):
        with self.assertRaises(ConnectorError) as cm:
            self.client.create_connect_session("42", "https://evil.example/accounts/settings/")
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "return_url_not_allowed"))

    def test_invalid_limit(self):
        with self.assertRaises(ConnectorError) as cm:
            list(self.client.list_connections(limit=0))
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_request"))

    def test_unreachable(self):
        with socket.socket() as s:  # a loopback port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.assertRaises(TemporarilyUnavailable) as cm:
            ConnectorClient(f"http://127.0.0.1:{port}", "k", timeout=5).status("42")
        self.assertEqual((cm.exception.status, cm.exception.code), (None, "connector_unreachable"))


class CompleteTests(ConnectorTest):
    def test_complete_then_spent(self):
        user, code, email = env(self, "COMPLETE_USER_ID", "COMPLETE_CODE", "COMPLETE_EMAIL")
        with self.assertRaises(NotConnected):
            self.client.status(user)  # signed in, not yet completed: nothing connected
        got = self.client.complete(user, code)
        self.assertEqual((got["user_id"], got["status"]), (user, "connected"))
        self.assertEqual(got["account"]["email"], email)
        self.assertFalse({"access_token", "refresh_token"} & got.keys(), "the status must never hold a token")
        self.assertEqual(self.client.status(user)["account"]["email"], email)
        with self.assertRaises(InvalidConnectCode) as cm:
            self.client.complete(user, code)  # single use
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_connect_code"))
        self.client.disconnect(user)

    def test_user_mismatch_destroys_the_sign_in(self):
        started_by, code, other = env(self, "MISMATCH_STARTED_BY", "MISMATCH_CODE", "MISMATCH_OTHER_USER")
        with self.assertRaises(UserMismatch) as cm:
            self.client.complete(other, code)
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "user_mismatch"))
        # Destroyed: not even the user who started it can finish it now.
        with self.assertRaises(InvalidConnectCode):
            self.client.complete(started_by, code)
        for user in (started_by, other):
            with self.subTest(user=user), self.assertRaises(NotConnected):
                self.client.status(user)

    def test_unknown_code(self):
        (user,) = env(self, "COMPLETE_USER_ID")
        with self.assertRaises(InvalidConnectCode) as cm:
            self.client.complete(user, "no-such-code-" + uuid.uuid4().hex)
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_connect_code"))

    def test_missing_code(self):
        # A return URL with microsoft=signed_in but no connect_code: nothing to send.
        for code in ("", None):
            with self.subTest(code=code), self.assertRaises(InvalidConnectCode) as cm:
                self.client.complete("42", code)
            self.assertEqual(cm.exception.status, None)


class UserIdTests(unittest.TestCase):
    """The v2 user_id rule, checked before anything is sent."""

    def test_valid(self):
        for user in ("42", "a", "ada@contoso.com", "A-Z_a.z~0-9", "...", "x" * 256):
            with self.subTest(user=user):
                self.assertTrue(is_valid_user_id(user))

    def test_invalid(self):
        for user in ("", ".", "..", "42/x", "42?x", "42#x", "42\\x", "42%3Fx", "a b", "ü", "x" * 257, 42, None):
            with self.subTest(user=user):
                self.assertFalse(is_valid_user_id(user))

    def test_client_refuses_invalid_ids_before_calling(self):
        # No server listens here: a ValueError (not TemporarilyUnavailable)
        # proves nothing was sent.
        client = ConnectorClient("http://127.0.0.1:9", "k", timeout=1)
        for call in (lambda: client.status("42?x"), lambda: client.get_token("42#x"),
                     lambda: client.disconnect("a/b"), lambda: client.complete("..", "code"),
                     lambda: client.create_connect_session("ü", "https://cms.example/")):
            with self.assertRaises(ValueError):
                call()

    def test_encode_user_id(self):
        for cms_id in ("42", "ada@contoso.com", "ü/#?\\ %", "x" * 192, b"\x00\xff"):
            with self.subTest(cms_id=cms_id):
                got = encode_user_id(cms_id)
                self.assertTrue(is_valid_user_id(got), got)
                raw = cms_id.encode() if isinstance(cms_id, str) else cms_id
                self.assertEqual(base64.urlsafe_b64decode(got + "=" * (-len(got) % 4)), raw)
        self.assertEqual(len(encode_user_id("x" * 192)), 256)
        for too_long in ("x" * 193, "ü" * 97, ""):
            with self.subTest(n=len(too_long)), self.assertRaises(ValueError):
                encode_user_id(too_long)


class StubResponses(unittest.TestCase):
    """Answers the real connector gives only under conditions a test cannot
    cheaply cause (Microsoft down while a token expired, a missing secret,
    a gateway in front), served by a loopback stub."""

    @classmethod
    def setUpClass(cls):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                status, headers, body = cls.answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        cls.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.client = ConnectorClient(f"http://127.0.0.1:{cls.server.server_port}", "k", timeout=5)

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def get_token_error(self, status, headers, body):
        type(self).answer = (status, headers, body)
        with self.assertRaises(ConnectorError) as cm:
            self.client.get_token("42")
        return cm.exception

    def test_temporarily_unavailable(self):
        e = self.get_token_error(503, {"Retry-After": "7", "Content-Type": "application/json"},
                                 b'{"error":"temporarily_unavailable","message":"retry later"}')
        self.assertIsInstance(e, TemporarilyUnavailable)
        self.assertEqual((e.status, e.code, e.retry_after), (503, "temporarily_unavailable", 7))

    def test_retry_after_http_date(self):
        when = now() + datetime.timedelta(seconds=120)
        e = self.get_token_error(503, {"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")},
                                 b'{"error":"temporarily_unavailable","message":"retry later"}')
        self.assertIsInstance(e, TemporarilyUnavailable)
        self.assertTrue(100 <= e.retry_after <= 120, e.retry_after)

    def test_not_configured(self):
        e = self.get_token_error(503, {"Retry-After": "60"},
                                 b'{"error":"not_configured","message":"see the log"}')
        self.assertIsInstance(e, NotConfigured)
        self.assertEqual((e.status, e.retry_after), (503, 60))

    def test_gateway_error_page(self):
        e = self.get_token_error(502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")
        self.assertIsInstance(e, TemporarilyUnavailable)
        self.assertEqual((e.status, e.code), (502, "connector_unavailable"))

    def test_internal_error(self):
        e = self.get_token_error(500, {}, b'{"error":"internal_error","message":"internal error"}')
        self.assertIs(type(e), ConnectorError)
        self.assertEqual((e.status, e.code), (500, "internal_error"))


class WebhookTests(unittest.TestCase):
    # GitHub's published HMAC-SHA256 webhook example: the same construction.
    SECRET = "It's a Secret to Everybody"
    BODY = b"Hello, World!"
    SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

    def test_known_vector(self):
        self.assertTrue(verify_webhook(self.SECRET, self.BODY, self.SIGNATURE))
        self.assertTrue(verify_webhook(self.SECRET.encode(), self.BODY, self.SIGNATURE.upper().replace("SHA256=", "sha256=")))

    def test_rotation(self):
        self.assertTrue(verify_webhook(["the new secret", self.SECRET], self.BODY, self.SIGNATURE))
        self.assertTrue(verify_webhook((self.SECRET, ""), self.BODY, self.SIGNATURE))
        self.assertFalse(verify_webhook(["the new secret", ""], self.BODY, self.SIGNATURE))
        self.assertFalse(verify_webhook([], self.BODY, self.SIGNATURE))

    def test_rejects(self):
        for secret, body, sig in [
            (self.SECRET, self.BODY + b" ", self.SIGNATURE),
            ("another secret", self.BODY, self.SIGNATURE),
            (self.SECRET, self.BODY, self.SIGNATURE[len("sha256="):]),
            (self.SECRET, self.BODY, "sha1=" + self.SIGNATURE[len("sha256="):]),
            (self.SECRET, self.BODY, "sha256=ü"),
            (self.SECRET, self.BODY, ""),
            ("", self.BODY, self.SIGNATURE),
        ]:
            with self.subTest(secret=secret, body=body, sig=sig):
                self.assertFalse(verify_webhook(secret, body, sig))

    def test_real_delivery(self):
        secret, path, sig, delivery, user = env(
            self, "WEBHOOK_SECRET", "WEBHOOK_BODY_FILE", "WEBHOOK_SIGNATURE", "WEBHOOK_DELIVERY", "CONNECTED_USER_ID")
        with open(path, "rb") as f:
            body = f.read()
        self.assertTrue(verify_webhook(secret, body, sig))
        self.assertFalse(verify_webhook(secret + "x", body, sig))
        self.assertFalse(verify_webhook(secret, body.replace(b"connection.", b"connectionX"), sig))
        event = json.loads(body)
        self.assertEqual(event["type"], "connection.connected")
        self.assertEqual(event["user_id"], user)
        self.assertIsNone(event["reason"])
        self.assertTrue(delivery)


class DisconnectTests(ConnectorTest):
    """Runs last: it removes the connected user."""

    def test_disconnect(self):
        (user,) = env(self, "CONNECTED_USER_ID")
        self.client.disconnect(user)
        with self.assertRaises(NotConnected):
            self.client.status(user)
        with self.assertRaises(NotConnected):
            self.client.get_token(user)
        self.client.disconnect(user)  # nothing connected: still fine


def load_tests(loader, tests, pattern):
    # An explicit order: the disconnect test must come after every test
    # that needs the connected user.
    suite = unittest.TestSuite()
    for case in (ConnectedUserTests, ErrorTests, CompleteTests, UserIdTests, StubResponses, WebhookTests,
                 DisconnectTests):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


if __name__ == "__main__":
    unittest.main(verbosity=2)
