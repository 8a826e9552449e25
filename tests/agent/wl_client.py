"""Minimal SPIFFE Workload API client (Python grpcio), run as a separate process so the tests
can call the agent under another uid. Prints one JSON object on stdout.

usage: wl_client.py STUBS_DIR SOCKET x509|jwt [AUDIENCE]
       wl_client.py STUBS_DIR SOCKET x509-files OUT_DIR SPIFFE_ID
         (writes OUT_DIR/svid.pem (leaf first), key.pem and bundle.pem for that identity)
"""

import base64
import json
import os
import sys

stubs, socket, what = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
import workload_pb2  # noqa: E402
import workload_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel("unix:" + socket)
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
md = (("workload.spiffe.io", "true"),)
try:
    if what == "x509-files":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "interop"))
        from helpers import split_der_chain  # noqa: E402

        def pem(kind: str, der: bytes) -> str:
            b64 = base64.b64encode(der).decode()
            lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
            return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n"

        out, want = sys.argv[4], sys.argv[5]
        stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=md, timeout=15)
        first = next(iter(stream))
        stream.cancel()
        match = [s for s in first.svids if s.spiffe_id == want]
        if not match:
            print(json.dumps({"ok": False, "ids": [s.spiffe_id for s in first.svids]}))
            sys.exit(0)
        svid = match[0]
        with open(os.path.join(out, "svid.pem"), "w") as f:
            f.write("".join(pem("CERTIFICATE", c) for c in split_der_chain(svid.x509_svid)))
        with open(os.path.join(out, "key.pem"), "w") as f:
            f.write(pem("PRIVATE KEY", svid.x509_svid_key))
        with open(os.path.join(out, "bundle.pem"), "w") as f:
            f.write("".join(pem("CERTIFICATE", c) for c in split_der_chain(svid.bundle)))
        print(json.dumps({"ok": True, "ids": [want]}))
    elif what == "x509":
        stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=md, timeout=15)
        first = next(iter(stream))
        print(json.dumps({"ok": True, "ids": [s.spiffe_id for s in first.svids]}))
        stream.cancel()
    else:
        resp = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=[sys.argv[4]]), metadata=md,
                                 timeout=15)
        print(json.dumps({"ok": True, "ids": [s.spiffe_id for s in resp.svids]}))
except grpc.RpcError as e:
    print(json.dumps({"ok": False, "code": e.code().name, "message": e.details()}))
