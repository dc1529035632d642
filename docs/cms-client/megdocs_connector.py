"""Client for the MEGDocs Microsoft connector's CMS API (contract v1).

Server to server only: the API key must never reach a browser. Needs only
``requests``. Every method raises a subclass of ConnectorError on failure:

    NotConnected            404 not_connected: the user has no connection
    ReconnectRequired       409 reconnect_required: ask the user to connect again
    TemporarilyUnavailable  503 temporarily_unavailable (retry_after seconds), or
                            the connector could not be reached: try again later
    NotConfigured           503 not_configured: an administrator must fix settings
    ConnectorError          anything else (400 invalid_request,
                            return_url_not_allowed, 401 unauthorized, 500 ...)
"""

import email.utils
import hashlib
import hmac
import time
from urllib.parse import quote

import requests

__all__ = [
    "ConnectorClient",
    "ConnectorError",
    "NotConnected",
    "ReconnectRequired",
    "TemporarilyUnavailable",
    "NotConfigured",
    "verify_webhook",
]


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
        body = {"user_id": user_id, "return_url": return_url}
        if login_hint:
            body["login_hint"] = login_hint
        return self._call("POST", "/api/connect-sessions", json=body).json()

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
        # safe="": a "/" in a user id must stay inside one path segment.
        return "/api/connections/" + quote(user_id, safe="")

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
