"""Client for the MEGDocs Microsoft connector's CMS API (contract v2).

Server to server only: the API key must never reach a browser. Needs only
``requests``. Every method raises a subclass of ConnectorError on failure:

    NotConnected            404 not_connected: the user has no connection
    ReconnectRequired       409 reconnect_required: ask the user to connect again
    UserMismatch            409 user_mismatch: complete() by a CMS user other than
                            the one who started the connect; nothing was connected
    InvalidConnectCode      400 invalid_connect_code: unknown, used or expired code
    TemporarilyUnavailable  503 temporarily_unavailable (retry_after seconds), or
                            the connector could not be reached: try again later
    NotConfigured           503 not_configured: an administrator must fix settings
    ConnectorError          anything else (400 invalid_request,
                            return_url_not_allowed, 401 unauthorized, 500 ...)

A user_id outside contract v2's set raises ValueError before any call: map
such CMS ids with encode_user_id().
"""

import base64
import email.utils
import hashlib
import hmac
import re
import time

import requests

__all__ = [
    "ConnectorClient",
    "ConnectorError",
    "NotConnected",
    "ReconnectRequired",
    "UserMismatch",
    "InvalidConnectCode",
    "TemporarilyUnavailable",
    "NotConfigured",
    "verify_webhook",
    "is_valid_user_id",
    "encode_user_id",
]

# Contract v2's user_id: 1-256 of A-Z a-z 0-9 - . _ ~ @, not "." or "..".
# The Functions host decodes percent escapes in the path before the connector
# sees it, so an id with any other character (even escaped) could reach
# another user's route: the client refuses such ids before sending anything.
_USER_ID = re.compile(r"[A-Za-z0-9._~@-]{1,256}")


def is_valid_user_id(user_id):
    """True when ``user_id`` may be sent to the connector as it is."""
    return (isinstance(user_id, str) and _USER_ID.fullmatch(user_id) is not None
            and user_id not in (".", ".."))


def encode_user_id(cms_id):
    """Maps any CMS id (str or bytes) to a valid user_id: its unpadded
    base64url form (A-Z a-z 0-9 - _). Use it for every user of a CMS whose
    ids are not already valid (never only for some: an encoded id could equal
    another user's raw one). 192 bytes of UTF-8 fit in the 256 characters."""
    raw = cms_id.encode("utf-8") if isinstance(cms_id, str) else bytes(cms_id)
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if not 1 <= len(encoded) <= 256:
        raise ValueError(f"a CMS id of {len(raw)} bytes does not fit a user_id (1-192 bytes)")
    return encoded


class ConnectorError(Exception):
    """A call failed. ``status`` is the HTTP status (None when no answer
    came), ``code`` the contract's stable error code, ``message`` its text."""

    def __init__(self, status, code, message, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class NotConnected(ConnectorError):
    """The user has no Microsoft connection (404 not_connected)."""


class ReconnectRequired(ConnectorError):
    """Microsoft no longer accepts the connection (409 reconnect_required):
    the user must connect again; retrying will not help."""


class UserMismatch(ConnectorError):
    """complete() was called for another CMS user than the one the connect
    was started for (409 user_mismatch): a connect link was opened in someone
    else's browser. The connector destroyed the sign-in; nothing was
    connected for either user. Tell the user, and let them start again."""


class InvalidConnectCode(ConnectorError):
    """The connect_code is unknown, already used or expired (400
    invalid_connect_code; codes live 10 minutes). Nothing was connected: the
    user starts again."""


class TemporarilyUnavailable(ConnectorError):
    """Try again later: Microsoft cannot refresh right now (503
    temporarily_unavailable; ``retry_after`` is the number of seconds the
    connector asked for), or the connector itself did not answer."""


class NotConfigured(ConnectorError):
    """The connector is missing a setting or secret, or Microsoft rejected
    its app credentials (503 not_configured): an administrator must act."""


_BY_CODE = {
    "not_connected": NotConnected,
    "reconnect_required": ReconnectRequired,
    "user_mismatch": UserMismatch,
    "invalid_connect_code": InvalidConnectCode,
    "temporarily_unavailable": TemporarilyUnavailable,
    "not_configured": NotConfigured,
}


class ConnectorClient:
    """Calls the connector's CMS API with the Bearer CMS API key.

    ``base_url`` is the connector's base URL (``https://<app>.azurewebsites.net``).
    A ``requests.Session`` may be passed to share connection pooling; the
    client is then as thread-safe as that session.
    """

    def __init__(self, base_url, api_key, timeout=10.0, session=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def create_connect_session(self, user_id, return_url, login_hint=None):
        """Starts a connect flow. Returns ``{"connect_url", "expires_at"}``:
        redirect the user's browser to connect_url (single use, 10 minutes)."""
        _check_user_id(user_id)
        body = {"user_id": user_id, "return_url": return_url}
        if login_hint:
            body["login_hint"] = login_hint
        return self._call("POST", "/api/connect-sessions", json=body).json()

    def complete(self, user_id, connect_code):
        """Finishes a connect when the browser comes back with
        ``microsoft=signed_in&connect_code=...``. ``user_id`` must be the CMS
        user logged in *in that browser* (the request's session), never an id
        from the URL. Returns the status object of the new connection.
        Raises UserMismatch when the connect was started by another user, and
        InvalidConnectCode when the code is unknown, used or expired."""
        if not isinstance(connect_code, str) or not connect_code:
            raise InvalidConnectCode(None, "invalid_connect_code", "no connect_code in the return URL")
        return self._call("POST", self._user_path(user_id) + "/complete", json={"connect_code": connect_code}).json()

    def status(self, user_id):
        """The user's connection (status, account, scopes, times, last_error).
        Raises NotConnected when there is none."""
        return self._call("GET", self._user_path(user_id)).json()

    def list_connections(self, status=None, limit=100):
        """Yields every connection (optionally only one ``status``, e.g.
        ``"reconnect_required"``), following next_cursor page by page."""
        params = {"limit": limit}
        if status:
            params["status"] = status
        while True:
            page = self._call("GET", "/api/connections", params=params).json()
            yield from page["connections"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def get_token(self, user_id):
        """A usable access token: ``{"access_token", "token_type",
        "expires_at", "scope"}``. Call it before each Graph call (the
        connector refreshes when needed); do not store the token."""
        return self._call("POST", self._user_path(user_id) + "/token").json()

    def disconnect(self, user_id):
        """Deletes the user's stored tokens. Succeeds also when nothing was
        connected."""
        self._call("DELETE", self._user_path(user_id))

    @staticmethod
    def _user_path(user_id):
        _check_user_id(user_id)
        return "/api/connections/" + user_id  # a valid id needs no escaping

    def _call(self, method, path, **kwargs):
        try:
            resp = self._session.request(
                method, self.base_url + path, headers=self._headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as e:
            raise TemporarilyUnavailable(None, "connector_unreachable", str(e)) from e
        if resp.ok:
            return resp
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        try:
            err = resp.json()
            code, message = err["error"], err.get("message", "")
        except (ValueError, KeyError, TypeError):
            # Not the connector's JSON: a gateway or the Functions host.
            if resp.status_code in (429, 502, 503, 504):
                raise TemporarilyUnavailable(resp.status_code, "connector_unavailable", resp.reason, retry_after)
            raise ConnectorError(resp.status_code, "unexpected_response", resp.text[:200], retry_after)
        raise _BY_CODE.get(code, ConnectorError)(resp.status_code, code, message, retry_after)


def _check_user_id(user_id):
    if not is_valid_user_id(user_id):
        raise ValueError(
            "user_id must be 1-256 of A-Z a-z 0-9 - . _ ~ @ (not . or ..): "
            f"map the CMS id first, e.g. with encode_user_id(): {user_id!r}")


def _retry_after(value):
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


def verify_webhook(secret, body, signature_header):
    """True when ``signature_header`` (X-MEGDocs-Signature) is
    ``sha256=<hex HMAC-SHA256 of body with secret>``. ``body`` must be the
    raw request bytes, before any JSON parsing. ``secret`` may be a list of
    secrets (the old and the new one while cms-webhook-secret is rotated):
    any of them may have signed."""
    if not signature_header or not signature_header.startswith("sha256="):
        return False
    given = signature_header[len("sha256="):].strip().lower().encode("utf-8", "replace")
    secrets = secret if isinstance(secret, (list, tuple)) else [secret]
    ok = False
    for s in secrets:
        if not s:
            continue  # an empty key would accept anyone's signature
        if isinstance(s, str):
            s = s.encode()
        expected = hmac.new(s, body, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, given)
    return ok
