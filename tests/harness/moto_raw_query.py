"""Runs moto_server with one correction to its signature check.

moto checks SigV4 against the URL as werkzeug's Request.url rebuilds it, and
that rebuilt URL has percent-escapes in the query decoded ("prefix=a%2Fb"
becomes "prefix=a/b"). AWS signs the query as it was encoded, so any
correctly signed request with "/" (or another escaped character) in a query
value gets SignatureDoesNotMatch from moto and would from no real S3. This
launcher hands moto's check the raw query string the client sent, before
starting moto_server as usual. Signatures are still checked, strictly.

    python3 moto_raw_query.py -H 127.0.0.1 -p PORT
"""
import sys
from urllib.parse import urlsplit, urlunsplit

from moto.core import authorization
from moto.server import main

_check = authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action


def _check_with_raw_query(self, iam_request_cls, resource="*"):
    request = getattr(self, "request", None)
    environ = getattr(request, "environ", None) or {}
    raw = environ.get("QUERY_STRING")
    if not raw:
        return _check(self, iam_request_cls, resource)
    rebuilt = self.uri
    self.uri = urlunsplit(urlsplit(rebuilt)._replace(query=raw))
    try:
        return _check(self, iam_request_cls, resource)
    finally:
        self.uri = rebuilt


authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _check_with_raw_query

if __name__ == "__main__":
    sys.exit(main())
