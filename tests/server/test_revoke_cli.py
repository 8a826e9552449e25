"""`sigil revoke` end to end: the real CLI against a real `sigil server` (issue 7).

Revokes a certificate, a workload identity, a credential binding and a node through the CLI and
checks, with an independent gRPC client (Python grpcio, stubs compiled from agent.proto), that
the server refuses what was revoked and allows it again after `sigil revoke lift`; `sigil revoke
list` (table and JSON), the audit trail, error messages naming the field, the read-only admin
role, and that neither `sigil apply` nor the generic resource routes can write a Revocation.

The server, node joins and gRPC plumbing come from tests/server/test_agent_api.py.

Run: SIGIL_BIN=build/release/apps/sigil/sigil /usr/bin/python3 tests/server/test_revoke_cli.py
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "interop"))

import helpers  # noqa: E402
from helpers import run  # noqa: E402
import test_agent_api as agentapi  # noqa: E402

TD = agentapi.TD
ADMIN = f"spiffe://{TD}/sigil/admin"
RPC_TIMEOUT = agentapi.RPC_TIMEOUT
WEB_ID = agentapi.WEB_ID  # spiffe://example.org/web/node-a
WEB_SELECTORS = agentapi.WEB_SELECTORS
TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

CREDENTIALS = f"""\
apiVersion: sigil.dev/v1alpha1
kind: CredentialSource
metadata: {{name: openai-key}}
spec: {{type: static, value: sk-revoke-e2e}}
---
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {{name: openai}}
spec:
  mode: inject
  addresses: ["api.openai.example:80"]
---
apiVersion: sigil.dev/v1alpha1
kind: CredentialBinding
metadata: {{name: openai}}
spec:
  source: openai-key
  service: openai
  identities: ["spiffe://{TD}/web/*"]
  delivery:
    header: {{name: Authorization, template: "Bearer {{{{secret}}}}"}}
"""


class RevokeCliTest(agentapi.AgentApiCase):

    # --- helpers ------------------------------------------------------------------------

    def cli_as(self, creds: str, *args: object, check: bool = True):
        return run([self.sigil_bin, *args, "--server", self.admin_url,
                    "--credentials", self.data / creds], check=check)

    def refused(self, *args: object, code: int = 1, creds: str = "admin"):
        """Runs a CLI command that must fail with exit status `code`; returns its stderr."""
        r = self.cli_as(creds, *args, check=False)
        self.assertEqual(r.returncode, code,
                         f"sigil {' '.join(map(str, args))}: exit {r.returncode}\n"
                         f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r.stderr

    def listed(self) -> dict:
        items = json.loads(self.cli("revoke", "list", "--json").stdout)
        return {i["name"]: i for i in items}

    def renew(self, stub):
        req = self.pb.RenewNodeSVIDRequest(csr=agentapi.csr_der(agentapi.new_key()))
        return stub.RenewNodeSVID(req, timeout=RPC_TIMEOUT)

    def sign(self, stub, spiffe_id: str = WEB_ID, pid: int = 41001):
        req = self.pb.SignWorkloadSVIDRequest(
            csr=agentapi.csr_der(agentapi.new_key()), spiffe_id=spiffe_id,
            process=self.process(pid, 1000, WEB_SELECTORS))
        return stub.SignWorkloadSVID(req, timeout=RPC_TIMEOUT)

    def fetch(self, stub, binding: str = "openai", pid: int = 42001):
        req = self.pb.FetchCredentialRequest(
            binding=binding, process=self.process(pid, 1000, WEB_SELECTORS))
        return stub.FetchCredential(req, timeout=RPC_TIMEOUT)

    def denied(self, fn, what: str):
        return self.assert_rpc_code(fn, [self.grpc.StatusCode.PERMISSION_DENIED], what)

    def curl(self, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
        port = self.admin_url.rsplit(":", 1)[1]
        creds = self.data / "admin"
        argv = ["curl", "-sS", "--max-time", "10", "-X", method, "-o", "-", "-w",
                "\n%{http_code}", "--resolve", f"localhost:{port}:127.0.0.1",
                "--cacert", creds / "bundle.pem", "--cert", creds / "cert.pem",
                "--key", creds / "key.pem", f"https://localhost:{port}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", body]
        text, code = run(argv).stdout.rsplit("\n", 1)
        return int(code), json.loads(text) if text.strip() else {}

    # --- the tests ----------------------------------------------------------------------

    def test_1_svid_revoke_list_lift(self):
        j = self.joined()
        cert = j["certs"][0]
        serial = format(cert.serial_number, "x")
        self.renew(j["stub"])  # works before

        # Upper case with leading zeros: the same serial.
        out = self.cli("revoke", "svid", "00" + serial.upper(), "--reason", "key copied").stdout
        self.assertRegex(out, rf"^revoked svid {serial} \(reason: key copied\) at {TIME_RE}; "
                              r"agents are told over Sync\n$")
        e = self.denied(lambda: self.renew(j["stub"]), "RenewNodeSVID with a revoked node SVID")
        self.assertIn("revoked", e.details())

        table = self.cli("revoke", "list").stdout.splitlines()
        self.assertEqual(table[0], "KIND\tTARGET\tREVOKED-AT\tBY\tREASON")
        self.assertRegex("\n".join(table[1:]),
                         rf"(?m)^svid\t{serial}\t{TIME_RE}\t{re.escape(ADMIN)}\tkey copied$")
        item = self.listed()[f"svid/{serial}"]
        self.assertEqual(item["kind"], "svid")
        self.assertEqual(item["target"], serial)
        self.assertEqual(item["serials"], [serial])
        self.assertEqual(item["identities"], [])
        self.assertEqual(item["revokedBy"], ADMIN)
        self.assertEqual(item["expiresAt"], int(agentapi.not_after(cert).timestamp()))
        self.assertTrue(item["resourceVersion"].isdigit())
        # The read-only role may list.
        ro = json.loads(self.cli_as("admin-readonly", "revoke", "list", "--json").stdout)
        self.assertIn(f"svid/{serial}", [i["name"] for i in ro])

        records = self.audit(type="revoke.svid")
        self.assertEqual(len(records), 1, records)
        self.assertEqual(records[0]["actor"], ADMIN)
        self.assertEqual(records[0]["node"], self.NODE)
        self.assertEqual(records[0]["details"]["target"], serial)
        self.assertEqual(records[0]["details"]["reason"], "key copied")

        # Revoking again is not an error; it updates the reason.
        self.cli("revoke", "svid", serial, "--reason", "key copied twice")
        again = self.listed()[f"svid/{serial}"]
        self.assertEqual(again["reason"], "key copied twice")
        self.assertGreater(int(again["resourceVersion"]), int(item["resourceVersion"]))

        out = self.cli("revoke", "lift", "svid", serial, "--reason", "false alarm").stdout
        self.assertEqual(out, f"lifted the revocation of svid {serial} (reason: false alarm); "
                              "agents are told over Sync\n")
        self.assertNotIn(f"svid/{serial}", self.listed())
        self.renew(j["stub"])
        lifted = self.audit(type="revoke.lift")
        self.assertEqual(lifted[-1]["details"]["reason"], "false alarm")
        err = self.refused("revoke", "lift", "svid", serial, "--reason", "again")
        self.assertIn("404", err)
        self.assertIn(f"svid {serial} is not revoked", err)

    def test_2_identity_and_binding(self):
        j = self.joined()
        self.apply(agentapi.WEB_WI)
        self.apply(CREDENTIALS)
        self.sign(j["stub"])
        self.assertEqual(self.fetch(j["stub"]).secret, b"sk-revoke-e2e")

        out = self.cli("revoke", "identity", WEB_ID, "--reason", "image compromised").stdout
        self.assertRegex(out, rf"^revoked identity {re.escape(WEB_ID)} \(reason: image "
                              rf"compromised\) at {TIME_RE}; agents are told over Sync\n$")
        self.denied(lambda: self.sign(j["stub"], pid=41002), "SignWorkloadSVID, revoked ID")
        self.denied(lambda: self.fetch(j["stub"], pid=42002), "FetchCredential, revoked ID")
        svid_denied = self.audit(type="svid.denied", pid=41002)
        self.assertEqual(svid_denied[-1]["details"]["reason"], "identity revoked")
        cred_denied = self.audit(type="credential.denied", pid=42002)
        self.assertEqual(cred_denied[-1]["details"]["reason"], "identity revoked")
        self.cli("revoke", "lift", "identity", WEB_ID, "--reason", "rebuilt")
        self.sign(j["stub"], pid=41003)

        out = self.cli("revoke", "binding", "openai", "--reason", "key in a ticket").stdout
        self.assertIn("revoked binding openai (reason: key in a ticket)", out)
        e = self.denied(lambda: self.fetch(j["stub"], pid=42003), "FetchCredential, revoked")
        self.assertNotIn("sk-revoke-e2e", e.details())
        by_binding = self.audit(binding="openai")
        types = [r["type"] for r in by_binding]
        self.assertIn("revoke.binding", types)
        self.assertEqual(by_binding[-1]["type"], "credential.denied")
        self.assertEqual(by_binding[-1]["details"]["reason"], "binding revoked")
        self.cli("revoke", "lift", "binding", "openai", "--reason", "rotated")
        self.assertEqual(self.fetch(j["stub"], pid=42004).secret, b"sk-revoke-e2e")

    def test_3_errors_and_roles(self):
        self.joined()
        # Usage errors (exit 2), found by the CLI.
        self.assertIn("--reason", self.refused("revoke", "svid", "ab", code=2))
        self.assertIn('unknown kind "gizmo"',
                      self.refused("revoke", "gizmo", "x", "--reason", "r", code=2))
        self.assertIn("want KIND and TARGET", self.refused("revoke", "svid", "--reason", "r",
                                                           code=2))
        # The server's refusals name the field.
        cases = [
            (["revoke", "svid", "ab", "--reason", ""], "400", "reason: required"),
            (["revoke", "svid", "xyz", "--reason", "r"], "400", "target: "),
            (["revoke", "svid", "deadbeef", "--reason", "r"], "404",
             "no certificate with serial deadbeef was issued by this server"),
            (["revoke", "identity", "spiffe://other.org/web", "--reason", "r"], "400",
             "target: spiffe://other.org/web is not in trust domain example.org"),
            (["revoke", "identity", f"spiffe://{TD}/sigil/admin", "--reason", "r"], "400",
             "target: "),
            (["revoke", "node", "no-such-node", "--reason", "r"], "404", "not found"),
            (["revoke", "binding", "no-such-binding", "--reason", "r"], "404", "not found"),
            (["revoke", "svid", "ab", "--reason", "x" * 1025], "400", "reason: longer than"),
            (["revoke", "lift", "node", self.NODE, "--reason", "r"], None,
             "a revoked node stays revoked; join the machine under a new node name"),
        ]
        for args, status, needle in cases:
            with self.subTest(args=args[:3]):
                err = self.refused(*args)
                if status:
                    self.assertIn(f"server answered {status}", err)
                self.assertIn(needle, err)

        # The raw API: unknown kind and missing fields name the field.
        code, body = self.curl("POST", "/api/v1/revocations",
                               json.dumps({"kind": "gizmo", "target": "x", "reason": "r"}))
        self.assertEqual(code, 400, body)
        self.assertTrue(body["error"].startswith("kind: unknown kind"), body)
        code, body = self.curl("POST", "/api/v1/revocations",
                               json.dumps({"kind": "svid", "target": "ab"}))
        self.assertEqual((code, body["error"]), (400, "reason: required string"))
        code, body = self.curl("POST", "/api/v1/revocations/lift",
                               json.dumps({"kind": "svid", "reason": "r"}))
        self.assertEqual((code, body["error"]), (400, "target: required string"))
        code, body = self.curl("POST", "/api/v1/revocations",
                               json.dumps({"kind": "node", "target": self.NODE,
                                           "reason": "bad\u0007bell"}))
        self.assertEqual(code, 400, body)
        self.assertIn("reason: contains a control character", body["error"])

        # Nothing else can write a Revocation: not `sigil apply`, not the resource routes.
        doc = ("apiVersion: sigil.dev/v1alpha1\nkind: Revocation\nmetadata: {name: svid-ab}\n"
               "spec: {kind: svid, target: ab}\n")
        r = run([self.sigil_bin, "apply", "-f", "-", "--server", self.admin_url,
                 "--credentials", self.data / "admin"], check=False, input=doc)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("kind", r.stderr)
        for method in ("PUT", "DELETE"):
            code, body = self.curl(method, "/apis/sigil.dev/v1alpha1/revocations/svid-ab",
                                   doc if method == "PUT" else None)
            self.assertEqual(code, 404, body)
            self.assertIn("unknown kind", body["error"])
        code, body = self.curl("POST", "/apis/sigil.dev/v1alpha1/apply", doc)
        self.assertEqual(code, 400, body)
        self.assertEqual(self.listed(), {})

        # The read-only admin may not revoke or lift.
        for args in (["revoke", "node", self.NODE, "--reason", "r"],
                     ["revoke", "lift", "identity", WEB_ID, "--reason", "r"]):
            err = self.refused(*args, creds="admin-readonly")
            self.assertIn("403", err)
            self.assertIn("read-only", err)
        self.assertEqual(self.listed(), {})
        # --help works for every form.
        for args in (["revoke", "--help"], ["revoke", "node", "--help"],
                     ["revoke", "list", "--help"], ["revoke", "lift", "--help"]):
            r = run([self.sigil_bin, *args])
            self.assertIn("revoke", r.stdout)

    def test_4_node_revocation_ends_its_sync_stream(self):
        self.apply(agentapi.WEB_WI.replace("name: web}", "name: web-any}")
                   .replace("/web/{{node}}", "/any"))
        node = self._join_node("node-r")
        workload = agentapi.der_certs(
            self.sign(node["stub"], f"spiffe://{TD}/any", pid=43001).svid_chain)[0]
        node_serial = format(node["certs"][0].serial_number, "x")
        workload_serial = format(workload.serial_number, "x")

        q: queue.Queue = queue.Queue()
        call = node["stub"].Sync(self.pb.SyncRequest(from_revision=0), timeout=45)
        self.addCleanup(call.cancel)

        def reader() -> None:
            try:
                for msg in call:
                    q.put(msg)
                q.put(None)
            except self.grpc.RpcError as e:
                q.put(e)

        threading.Thread(target=reader, daemon=True).start()
        self.assertTrue(q.get(timeout=agentapi.DELTA_TIMEOUT).snapshot)

        out = self.cli("revoke", "node", "node-r", "--reason", "machine stolen").stdout
        self.assertRegex(out, rf"^revoked node node-r \(reason: machine stolen\) at {TIME_RE} "
                              r"with 2 certificates; agents are told over Sync\n$")
        end = None
        while end is None:
            msg = q.get(timeout=agentapi.DELTA_TIMEOUT)
            if msg is None or isinstance(msg, self.grpc.RpcError):
                end = msg
        self.assertIsNotNone(end, "the revoked node's Sync stream ended without an error")
        self.assertEqual(end.code(), self.grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(end.details(), "node node-r is revoked: machine stolen")

        item = self.listed()["node/node-r"]
        self.assertEqual(item["serials"], sorted([node_serial, workload_serial]))
        self.assertEqual(item["identities"], [f"spiffe://{TD}/sigil/node/node-r"])
        self.assertEqual(item["expiresAt"], 0)
        self.denied(lambda: self.renew(node["stub"]), "RenewNodeSVID of a revoked node")
        nodes = json.loads(self.cli("node", "list", "--json").stdout)
        self.assertTrue(next(n for n in nodes if n["name"] == "node-r")["revoked"])
        err = self.refused("revoke", "lift", "node", "node-r", "--reason", "found it")
        self.assertIn("a revoked node stays revoked", err)
        self.assertEqual(self.audit(type="revoke.node")[-1]["node"], "node-r")


if __name__ == "__main__":
    helpers.main()
