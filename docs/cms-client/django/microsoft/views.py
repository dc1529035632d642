"""Connect, return, status and disconnect: the CMS side of the connect flow.

Every view acts for ``request.user``, the user logged in in this browser,
and never for an id taken from the URL or a form."""

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from megdocs_connector import ConnectorError, InvalidConnectCode, NotConnected, UserMismatch

from .connector import client, user_id

logger = logging.getLogger(__name__)

CONNECTED = "Connected as {name} ({email})."
USER_MISMATCH = (
    "This Microsoft sign-in was started by another MEGDocs user, not by you. Nothing was connected, "
    "neither to your account nor to theirs. If someone sent you a link to connect Microsoft, do not use it: "
    "to connect your own Microsoft account, click Connect to Microsoft."
)
EXPIRED = "This Microsoft sign-in has expired or was already used. Nothing was connected. Please connect again."
UNAVAILABLE = "Microsoft cannot be connected right now. Please try again later."
RETURN_ERRORS = {
    "access_denied": "You cancelled connecting your Microsoft account.",
    "consent_required": "Your organisation's Microsoft administrator must approve MEGDocs before you can connect.",
    "exchange_failed": "Connecting your Microsoft account failed. Please try again.",
    "server_error": "Microsoft is not responding. Please try again later.",
}


@login_required
def connect_return(request):
    """Where the connector sends the browser back after the sign-in.

    The sign-in is completed for request.user: the user logged in in *this*
    browser. If the connect link was made for someone else (it leaked, or
    was sent on), the connector refuses (UserMismatch) and nothing is
    connected. Never take the user from the query string: the URL is exactly
    what an attacker controls."""
    outcome = request.GET.get("microsoft")
    if outcome == "signed_in":
        try:
            status = client().complete(user_id(request.user), request.GET.get("connect_code", ""))
        except UserMismatch:
            # The connector logged oauth_failed (reason user_mismatch) with both ids.
            messages.error(request, USER_MISMATCH)
        except InvalidConnectCode:
            messages.error(request, EXPIRED)
        except ConnectorError as e:
            logger.warning("completing a Microsoft connect failed: %s %s", e.status, e.code)
            messages.error(request, UNAVAILABLE)
        else:
            account = status["account"]
            messages.success(request, CONNECTED.format(name=account["display_name"], email=account["email"]))
    elif outcome == "error":
        reason = request.GET.get("reason")
        messages.error(request, RETURN_ERRORS.get(reason, RETURN_ERRORS["server_error"]))
    # Post/Redirect/Get: a reload of the settings page sends nothing again.
    return redirect("microsoft:settings")


@login_required
@require_POST  # with the CSRF token: another site cannot start a connect for your user
def connect(request):
    return_url = request.build_absolute_uri(reverse("microsoft:return"))
    try:
        session = client().create_connect_session(
            user_id(request.user), return_url, login_hint=request.user.email or None)
    except ConnectorError as e:
        logger.warning("starting a Microsoft connect failed: %s %s", e.status, e.code)
        messages.error(request, UNAVAILABLE)
        return redirect("microsoft:settings")
    return redirect(session["connect_url"])


@login_required
def settings_page(request):
    """The status: connected (which account), reconnect required, or not."""
    status, unavailable = None, False
    try:
        status = client().status(user_id(request.user))
    except NotConnected:
        pass
    except ConnectorError as e:
        logger.warning("reading the Microsoft status failed: %s %s", e.status, e.code)
        unavailable = True
    return render(request, "microsoft/settings.html", {"status": status, "unavailable": unavailable})


@login_required
@require_POST
def disconnect(request):
    try:
        client().disconnect(user_id(request.user))
    except ConnectorError as e:
        logger.warning("disconnecting Microsoft failed: %s %s", e.status, e.code)
        messages.error(request, UNAVAILABLE)
    else:
        messages.success(request, "Your Microsoft account is disconnected.")
    return redirect("microsoft:settings")
