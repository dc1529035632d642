"""The one place the CMS talks to the connector: a shared client, the
mapping from a CMS user to the connector's user_id, and the token helper."""

import functools

from django.conf import settings

from megdocs_connector import ConnectorClient


@functools.lru_cache(maxsize=None)
def client():
    """One client per process (requests.Session pools connections)."""
    return ConnectorClient(settings.MEGDOCS_CONNECTOR_URL, settings.MEGDOCS_CONNECTOR_KEY)


def user_id(user):
    """The connector's user_id of a CMS user: the primary key, which never
    changes (an e-mail address can). An integer or UUID key is already a
    valid user_id. With string keys, map every user the same way:
    ``encode_user_id(user.pk)`` (megdocs_connector), the base64url form."""
    return str(user.pk)


def access_token(user):
    """A usable Microsoft Graph access token for ``user``. Call it right
    before each Graph call and do not keep the token: the connector refreshes
    it when needed. Raises NotConnected, ReconnectRequired,
    TemporarilyUnavailable, NotConfigured (see docs/cms-integration.md)."""
    return client().get_token(user_id(user))["access_token"]
