"""Minimal SPIFFE Workload API client (Python grpcio), run as a separate process so the tests
can call the agent under another uid. Prints one JSON object on stdout.

usage: wl_client.py STUBS_DIR SOCKET x509|jwt [AUDIENCE]
"""

import json
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
    if what == "x509":
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
