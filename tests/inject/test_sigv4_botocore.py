"""Sigil's AWS SigV4 signer produces exactly what botocore produces.

For each request shape below, the same request, credentials and time are signed twice:
  * by `sigil_sigv4_tool` (src/dataplane/inject/sigv4_tool.cc, the agent's SignV4), given the
    request as the agent sees it on the wire (percent-encoded path and query);
  * by botocore's own signer (botocore.auth.SigV4Auth, S3SigV4Auth for s3) from Debian's
    python3-botocore, given the same request the way an SDK builds it (decoded query
    parameters), with botocore's clock fixed by patching botocore.auth.datetime.
Authorization, X-Amz-Date, X-Amz-Content-SHA256 and X-Amz-Security-Token must be
byte-identical (and present in both or in neither).

Shapes: query strings with repeated names, empty values, reserved characters, unicode and
non-canonical client encodings; paths with spaces, '~', '%', '//', '.' and '..' segments;
headers with leading/trailing/inner spaces, tabs and repeated names; empty, text and binary
bodies and unsigned payloads; with and without session token; services s3, sts, execute-api,
dynamodb. The agent signs a buffered body of a service other than S3 with the body hash also
sent as X-Amz-Content-SHA256 (content_hash=True below); botocore signs such a request with the
header present (it then signs the header and uses its value as the payload hash).

Run: SIGV4_TOOL=build/.../sigil_sigv4_tool /usr/bin/python3 tests/inject/test_sigv4_botocore.py
A missing tool or module is a failure, never a skip.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import types
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))
import helpers  # noqa: E402

MODS = helpers.require_modules((("botocore.auth", "python3-botocore"),
                                ("botocore.awsrequest", "python3-botocore"),
                                ("botocore.credentials", "python3-botocore")))
botocore_auth = MODS["botocore.auth"]
AWSRequest = MODS["botocore.awsrequest"].AWSRequest
Credentials = MODS["botocore.credentials"].Credentials

AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+token=="

T1 = datetime.datetime(2024, 2, 29, 23, 59, 58)
T2 = datetime.datetime(2015, 8, 30, 12, 36, 0)
T3 = datetime.datetime(2031, 12, 31, 0, 0, 1)

STS = ("sts", "eu-west-1", "sts.eu-west-1.amazonaws.com")
API = ("execute-api", "us-east-1", "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com")
S3 = ("s3", "eu-west-1", "s3.eu-west-1.amazonaws.com")
DDB = ("dynamodb", "eu-west-1", "dynamodb.eu-west-1.amazonaws.com")


def case(name, svc, method="GET", path="/", query="", params=(), headers=(), body=b"",
         token="", when=T1, content_hash=False):
    """path/query: as on the wire (what the agent sees); params: the decoded query pairs an SDK
    would hand botocore. body=None means UNSIGNED-PAYLOAD. content_hash: X-Amz-Content-SHA256
    carries the body's hash (the agent's mode for buffered bodies)."""
    service, region, host = svc
    return dict(name=name, service=service, region=region, host=host, method=method, path=path,
                query=query, params=list(params), headers=[("Host", host)] + list(headers),
                body=body, token=token, when=when, content_hash=content_hash)


CASES = [
    # --- sts / execute-api: normalised, doubly encoded paths ---------------------------------
    case("sts GET query", STS, query="Action=GetCallerIdentity&Version=2011-06-15",
         params=[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]),
    case("sts POST form body", STS, "POST",
         headers=[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
         body=b"Action=GetCallerIdentity&Version=2011-06-15"),
    case("sts POST with session token", STS, "POST",
         headers=[("Content-Type", "application/x-www-form-urlencoded")],
         body=b"Action=GetSessionToken&Version=2011-06-15", token=TOKEN, when=T2),
    case("path with encoded space", API, path="/prod/my%20doc"),
    case("path with tilde and unreserved", API, path="/prod/~user/a-b_c.d"),
    case("path with encoded percent", API, path="/prod/100%25done"),
    case("path with raw percent", API, path="/prod/50%off"),
    case("path with double slashes", API, path="//prod//double//slash//"),
    case("path with dot segments", API, path="/prod/./a/../b/./c"),
    case("path ending in dot-dot", API, path="/prod/a/b/.."),
    case("path climbing above root", API, path="/../../x/./"),
    case("path with unicode", API, path="/prod/caf%C3%A9/%E2%9C%93"),
    case("path with reserved characters", API, path="/prod/a:b@c!$'()*,;=+"),
    case("query with repeated names", API, path="/prod/items", query="k=2&k=10&k=1",
         params=[("k", "2"), ("k", "10"), ("k", "1")]),
    case("query with empty values", API, query="flag&empty=&x=1",
         params=[("flag", ""), ("empty", ""), ("x", "1")]),
    case("query with reserved characters", API, query="q=a%20b%26c%3Dd%2Fe%3Ff&%24top=5&sort=-name",
         params=[("q", "a b&c=d/e?f"), ("$top", "5"), ("sort", "-name")]),
    case("query with unicode", API, query="name=caf%C3%A9&emoji=%F0%9F%98%80",
         params=[("name", "caf\u00e9"), ("emoji", "\U0001F600")]),
    case("query with non-canonical client encoding", API, query="t=%7e%2d&u=%c3%a9&v=*",
         params=[("t", "~-"), ("u", "\u00e9"), ("v", "*")]),
    case("query with a literal plus", API, query="q=a+b&r=a%2Bb", params=[("q", "a+b"), ("r", "a+b")]),
    case("headers with spaces and tabs", API,
         headers=[("X-Spaces", "  a   b  c  "), ("X-Tab", "a\t\tb"), ("x-lead", "   lead")]),
    case("repeated header names", API,
         headers=[("X-Dup", "1"), ("x-dup", " 2 "), ("X-DUP", "three  spaced")]),
    case("unsigned-by-default headers", API, "POST",
         headers=[("User-Agent", "curl/7.88.1"), ("Expect", "100-continue"),
                  ("X-Amzn-Trace-Id", "Root=1-abc"), ("Content-Type", "application/json")],
         body=b'{"hello": "world"}'),
    case("empty header value", API, headers=[("X-Empty", "")], when=T3),
    case("binary body", API, "PUT", path="/prod/blob", body=bytes(range(256)) + b"\x00\xff"),
    case("unsigned payload, not s3", API, "POST", body=None,
         headers=[("Content-Type", "application/json")]),
    case("forged client signing headers replaced", STS, "POST", body=b"Action=X",
         headers=[("Authorization", "AWS4-HMAC-SHA256 Credential=forged"),
                  ("X-Amz-Date", "19990101T000000Z"), ("X-Amz-Security-Token", "forged")],
         token=TOKEN),
    # --- s3: the path exactly as sent, X-Amz-Content-SHA256 always -----------------------------
    case("s3 GET key with spaces", S3, path="/bucket/key%20with%20space"),
    case("s3 PUT with token and body", S3, "PUT", path="/bucket/dir//file.txt",
         headers=[("Content-Type", "text/plain")], body=b"hello, s3\n", token=TOKEN, when=T2),
    case("s3 path not normalised", S3, path="/bucket/./a/../b"),
    case("s3 list with query", S3, path="/bucket/%7Etilde~",
         query="list-type=2&prefix=a%2Fb&delimiter=%2F",
         params=[("list-type", "2"), ("prefix", "a/b"), ("delimiter", "/")]),
    case("s3 unsigned payload", S3, "PUT", path="/bucket/big.bin", body=None,
         headers=[("Content-Length", "5")]),
    case("s3 metadata, range, client content hash", S3, path="/bucket/obj",
         headers=[("X-Amz-Meta-Note", "  spaced   value "), ("Range", "bytes=0-9"),
                  ("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")], when=T3),
    case("s3 unicode key, empty and bare query values", S3, path="/bucket/caf%C3%A9.txt",
         query="versionId=&acl", params=[("versionId", ""), ("acl", "")]),
    case("s3 DELETE with plus in query", S3, "DELETE", path="/bucket/upload",
         query="uploadId=abc%2Bdef", params=[("uploadId", "abc+def")], token=TOKEN),
    # --- buffered bodies signed with their hash on the wire (the agent, services but S3) -------
    case("dynamodb JSON body hash", DDB, "POST", content_hash=True, token=TOKEN,
         headers=[("Content-Type", "application/x-amz-json-1.0"),
                  ("X-Amz-Target", "DynamoDB_20120810.ListTables"), ("Content-Length", "2")],
         body=b"{}"),
    case("sts form body hash", STS, "POST", content_hash=True,
         headers=[("Content-Type", "application/x-www-form-urlencoded")],
         body=b"Action=GetCallerIdentity&Version=2011-06-15"),
    case("empty body hash", DDB, "GET", path="/", content_hash=True, when=T2),
    case("64 KiB binary body hash", API, "PUT", path="/prod/blob", content_hash=True,
         body=bytes(range(256)) * 256, token=TOKEN, when=T3),
]

SIGNER_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token")


def botocore_sign(c: dict) -> tuple[dict, str]:
    """Signs the case with botocore at c['when']; (signer headers, canonical request)."""
    req = AWSRequest(method=c["method"], url="https://" + c["host"] + c["path"],
                     data=b"" if c["body"] is None else c["body"], params=c["params"])
    for name, value in c["headers"]:
        req.headers[name] = value  # appends: repeated names stay repeated
    if c["content_hash"]:
        req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(c["body"]).hexdigest()
    creds = Credentials(AKID, SECRET, c["token"] or None)
    if c["service"] == "s3":
        auth = botocore_auth.S3SigV4Auth(creds, "s3", c["region"])
        if c["body"] is None:
            req.context["client_config"] = types.SimpleNamespace(
                s3={"payload_signing_enabled": False})
    else:
        auth = botocore_auth.SigV4Auth(creds, c["service"], c["region"])
        if c["body"] is None:
            req.context["payload_signing_enabled"] = False
    captured = {}
    original = auth.canonical_request

    def capture(r):
        captured["cr"] = original(r)
        return captured["cr"]

    auth.canonical_request = capture
    with mock.patch.object(botocore_auth, "datetime") as fake:
        fake.datetime.utcnow.return_value = c["when"]
        fake.datetime.strptime = datetime.datetime.strptime
        auth.add_auth(req)
    return {h: req.headers[h] for h in SIGNER_HEADERS if h in req.headers}, captured["cr"]


def sigil_sign_all(cases: list[dict]) -> list[dict]:
    tool = os.environ.get("SIGV4_TOOL")
    if not tool or not os.access(tool, os.X_OK):
        raise AssertionError(f"SIGV4_TOOL={tool!r} is not an executable (build "
                             "sigil_sigv4_tool); this test never skips")
    payload = []
    for c in cases:
        when = c["when"].replace(tzinfo=datetime.timezone.utc)
        payload.append(dict(
            method=c["method"], path=c["path"], query=c["query"],
            headers=[[n, v] for n, v in c["headers"]],
            body_hex=None if c["body"] is None else c["body"].hex(),
            access_key=AKID, secret=SECRET, token=c["token"], region=c["region"],
            service=c["service"], time=int(when.timestamp()),
            content_sha256=c["content_hash"]))
    proc = helpers.run([tool], input=json.dumps(payload))
    out = json.loads(proc.stdout)
    if len(out) != len(cases):
        raise AssertionError(f"tool answered {len(out)} cases for {len(cases)}")
    return out


class SigV4MatchesBotocore(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.ours = sigil_sign_all(CASES)

    def test_enough_shapes(self) -> None:
        self.assertGreaterEqual(len(CASES), 24)
        self.assertGreaterEqual(sum(c["service"] == "s3" for c in CASES), 6)
        self.assertGreaterEqual(sum(bool(c["token"]) for c in CASES), 4)
        self.assertGreaterEqual(sum(c["body"] is None for c in CASES), 2)
        self.assertGreaterEqual(sum(c["content_hash"] for c in CASES), 4)

    def test_every_shape_byte_identical(self) -> None:
        for c, ours in zip(CASES, self.ours):
            with self.subTest(c["name"]):
                self.assertNotIn("error", ours, ours.get("error"))
                theirs, their_cr = botocore_sign(c)
                mine = dict(ours["headers"])
                detail = (f"\n--- sigil canonical request ---\n{ours['canonical_request']}"
                          f"\n--- botocore canonical request ---\n{their_cr}")
                self.assertEqual(sorted(mine), sorted(theirs), "different signer headers" + detail)
                for name in SIGNER_HEADERS:
                    self.assertEqual(mine.get(name), theirs.get(name), name + detail)
                self.assertEqual(ours["canonical_request"], their_cr)

    def test_comparison_is_sensitive(self) -> None:
        # A different secret or time changes botocore's signature: equality above is not luck.
        c = dict(CASES[0])
        base, _ = botocore_sign(c)
        c["when"] = c["when"] + datetime.timedelta(seconds=1)
        later, _ = botocore_sign(c)
        self.assertNotEqual(base["Authorization"], later["Authorization"])
        self.assertEqual(dict(self.ours[0]["headers"])["Authorization"], base["Authorization"])


if __name__ == "__main__":
    helpers.main()
