"""The views against a running connector, with Django's test client.

`make test` runs them from Go (handler/internal/djangotest), which starts the
handler, the Microsoft stand-in and Azurite, allows
http://localhost:8000/microsoft/return/ as a return URL and sets
MEGDOCS_CONNECTOR_URL, MEGDOCS_CONNECTOR_KEY and STRICT=1 (fail, rather than
skip, without them). What the user's browser does between the CMS and the
return (open connect_url, pick an account at the sign-in page, follow the
callback) is done with requests against the stand-in's sign-in page.
"""

import os
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client, TestCase
from django.urls import reverse

from megdocs_connector import InvalidConnectCode, NotConnected, is_valid_user_id

from . import views
from .connector import access_token, client, user_id

# The test client's requests claim this host, so build_absolute_uri() makes
# return URLs the connector accepts over plain http (loopback only).
HOST = "localhost:8000"
RETURN_URL = "http://" + HOST + "/microsoft/return/"


def sign_in(connect_url, account):
    """The user's browser between the CMS and the return: opens connect_url,
    picks ``account`` on the (stand-in's) sign-in page, follows the callback.
    Returns the URL the connector sends the browser back to."""
    browser = requests.Session()  # keeps the connector's state cookie
    resp = browser.get(connect_url, allow_redirects=False, timeout=30)
    assert resp.status_code == 302, (resp.status_code, resp.text[:200])
    authorize = resp.headers["Location"]
    page = browser.get(authorize, timeout=30).text
    picked = re.search(
        r'name="account" value="([^"]+)">\s*<button[^>]*data-upn="%s"' % re.escape(account), page)
    assert picked, "no account %s on the sign-in page:\n%s" % (account, page[:500])
    resp = browser.post(authorize, data={"account": picked.group(1)}, allow_redirects=False, timeout=30)
    assert resp.status_code == 302, (resp.status_code, resp.text[:200])
    resp = browser.get(resp.headers["Location"], allow_redirects=False, timeout=30)  # the callback
    assert resp.status_code == 302, (resp.status_code, resp.text[:200])
    return resp.headers["Location"]


def local(url):
    """The path and query of an absolute URL of this CMS, for the test client."""
    parts = urlsplit(url)
    assert parts.netloc == HOST, url
    return parts.path + "?" + parts.query


class LiveConnectorTest(TestCase):
    def setUp(self):
        if not (settings.MEGDOCS_CONNECTOR_KEY and os.environ.get("MEGDOCS_CONNECTOR_URL")):
            msg = "needs MEGDOCS_CONNECTOR_URL and MEGDOCS_CONNECTOR_KEY (a running connector)"
            if os.environ.get("STRICT") == "1":
                self.fail(msg)
            self.skipTest(msg)

    def user(self, name, email):
        u = get_user_model().objects.create_user(name, email=email)
        # The connector outlives the test database: start from nothing.
        client().disconnect(user_id(u))
        return u

    def browser_of(self, user):
        c = Client(HTTP_HOST=HOST)
        c.force_login(user)
        return c

    def start_connect(self, browser):
        """Clicks Connect to Microsoft; returns the connect_url."""
        resp = browser.post(reverse("microsoft:connect"))
        self.assertEqual(resp.status_code, 302)
        self.assertTrue(resp["Location"].startswith(settings.MEGDOCS_CONNECTOR_URL + "/api/connect?session="), resp["Location"])
        return resp["Location"]

    def come_back(self, browser, return_url):
        """The browser lands on the return URL; returns the messages shown
        on the settings page it is sent on to, and that page."""
        resp = browser.get(local(return_url))
        self.assertEqual(resp.status_code, 302)
        self.assertEqual(resp["Location"], reverse("microsoft:settings"))
        page = browser.get(resp["Location"])
        return [str(m) for m in page.context["messages"]], page.content.decode()

    def assertNotConnected(self, *users):
        for u in users:
            with self.subTest(user=u.username), self.assertRaises(NotConnected):
                client().status(user_id(u))


class ConnectTests(LiveConnectorTest):
    def test_connect_status_token_disconnect(self):
        mara = self.user("mara", "ada@contoso.com")
        browser = self.browser_of(mara)
        back = sign_in(self.start_connect(browser), "ada@contoso.com")
        self.assertTrue(back.startswith(RETURN_URL + "?"), back)
        self.assertNotConnected(mara)  # signed in, not completed yet

        shown, page = self.come_back(browser, back)
        self.assertEqual(shown, ["Connected as Ada Lovelace (ada@contoso.com)."])
        self.assertIn('<strong id="status">Connected</strong>', page)
        got = client().status(user_id(mara))
        self.assertEqual((got["user_id"], got["status"], got["account"]["email"]), (user_id(mara), "connected", "ada@contoso.com"))

        self.assertTrue(access_token(mara))

        # A reload of the return URL: the code is spent, nothing changes.
        shown, _ = self.come_back(browser, back)
        self.assertEqual(shown, [views.EXPIRED])
        self.assertEqual(client().status(user_id(mara))["account"]["email"], "ada@contoso.com")

        resp = browser.post(reverse("microsoft:disconnect"), follow=True)
        self.assertEqual([str(m) for m in get_messages(resp.wsgi_request)], ["Your Microsoft account is disconnected."])
        self.assertIn('<strong id="status">Not connected</strong>', resp.content.decode())
        self.assertNotConnected(mara)

    def test_return_needs_login_then_completes_for_who_logs_in(self):
        mara = self.user("mara", "ada@contoso.com")
        back = sign_in(self.start_connect(self.browser_of(mara)), "ada@contoso.com")
        anonymous = Client(HTTP_HOST=HOST)
        resp = anonymous.get(local(back))
        self.assertEqual(resp.status_code, 302)
        self.assertTrue(resp["Location"].startswith(settings.LOGIN_URL + "?next="), resp["Location"])
        self.assertNotConnected(mara)
        anonymous.force_login(mara)  # logs in; login's ?next= brings the browser back
        shown, _ = self.come_back(anonymous, back)
        self.assertEqual(shown, ["Connected as Ada Lovelace (ada@contoso.com)."])
        client().disconnect(user_id(mara))

    def test_error_return(self):
        mara = self.user("mara", "ada@contoso.com")
        shown, _ = self.come_back(self.browser_of(mara), RETURN_URL + "?microsoft=error&reason=access_denied")
        self.assertEqual(shown, [views.RETURN_ERRORS["access_denied"]])
        shown, _ = self.come_back(self.browser_of(mara), RETURN_URL + "?microsoft=error&reason=new_reason")
        self.assertEqual(shown, [views.RETURN_ERRORS["server_error"]])

    def test_user_id(self):
        mara = self.user("mara", "ada@contoso.com")
        self.assertEqual(user_id(mara), str(mara.pk))
        self.assertTrue(is_valid_user_id(user_id(mara)))


class LeakedLinkTests(LiveConnectorTest):
    """A connect link opened in another CMS user's browser connects nothing,
    in either direction, whatever the URL says."""

    def test_leaked_link_connects_nothing(self):
        mara = self.user("mara", "ada@contoso.com")
        victor = self.user("victor", "grace@contoso.com")
        for starter, finisher in ((mara, victor), (victor, mara)):
            with self.subTest(started_by=starter.username, finished_by=finisher.username):
                link = self.start_connect(self.browser_of(starter))
                # The link is sent on; the other user opens it and signs in
                # with their own Microsoft account.
                back = sign_in(link, finisher.email)
                # The URL naming the starter changes nothing: the view uses
                # request.user.
                forged = back + "&" + urlencode({"user_id": user_id(starter), "user": user_id(starter)})
                shown, page = self.come_back(self.browser_of(finisher), forged)
                self.assertEqual(shown, [views.USER_MISMATCH])
                self.assertIn('<strong id="status">Not connected</strong>', page)
                self.assertNotConnected(mara, victor)
                # Destroyed: the starter cannot finish it either.
                shown, _ = self.come_back(self.browser_of(starter), back)
                self.assertEqual(shown, [views.EXPIRED])
                self.assertNotConnected(mara, victor)
                code = parse_qs(urlsplit(back).query)["connect_code"][0]
                with self.assertRaises(InvalidConnectCode):
                    client().complete(user_id(starter), code)
