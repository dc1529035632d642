// Package djangotest runs the Django reference integration's tests
// (docs/cms-client/django, `manage.py test microsoft`) against the real
// handler: Django's test client plays the CMS, requests plays the user's
// browser at the Microsoft stand-in, and the connector is the one Azure
// runs, on Azurite. They include a connect link opened by another CMS user
// (user_mismatch), in both directions.
//
// It holds only tests. It needs a python3 with Django and requests (`make
// test-deps` installs Debian's python3-django and python3-requests); a
// missing one fails the test unless SKIP_DJANGO=1. Development tooling:
// never packaged.
package djangotest
