#!/usr/bin/env python3
"""Watch a geo-agent site's maintenance mode and print, at each change, whether the site
could be promoted now: the copy-paste start for a gRPC client of geo.v1.

    pip install grpcio==1.76.0 grpcio-tools==1.76.0
    python3 examples/python/watch_mode.py --addr 127.0.0.1:7600

The Python stubs are generated from the repository's proto/ at start (grpcio-tools'
protoc, into a temporary directory), so they always match the API this checkout serves.
ModeService.WatchMode sends the current mode first and then one message per change;
StatusService.CheckFailoverReadiness answers DESIGN's readiness list criterion by criterion.
Both are open to any client: no token is needed. Against a site that serves TLS, pass
--ca (and --cert/--key when it asks for a client certificate).

Exit codes: 0 after --changes messages (or Ctrl-C), 2 when the site cannot be reached.
"""

import argparse
import glob
import importlib.resources
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def generate_stubs(proto_dir):
    """Compiles proto/geo/v1/*.proto into a temporary package and imports it."""
    out = tempfile.mkdtemp(prefix="geo-v1-stubs-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    files = sorted(glob.glob(os.path.join(proto_dir, "geo", "v1", "*.proto")))
    if not files:
        sys.exit(f"error: no geo/v1/*.proto under {proto_dir} (use --proto)")
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit("error: protoc could not compile the protos")
    sys.path.insert(0, out)


def channel_for(args):
    if not args.ca:
        return grpc.insecure_channel(args.addr)
    read = lambda path: open(path, "rb").read() if path else None
    creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    return grpc.secure_channel(args.addr, creds)


def describe(mode, mode_pb2):
    role = mode_pb2.Role.Name(mode.role).removeprefix("ROLE_").lower()
    state = "ON" if mode.maintenance_mode else "off"
    line = f"{mode.site_id} ({role}, epoch {mode.epoch}): maintenance {state}"
    if mode.message:
        line += f": {mode.message!r}"
    if mode.updated_by:
        line += f" (by {mode.updated_by}, settings entry {mode.settings_index})"
    if mode.fenced:
        line += f"; fenced: {mode.fenced}"
    return line


def print_readiness(status, status_pb2, site):
    request = status_pb2.CheckFailoverReadinessRequest(site_id=site)
    try:
        answer = status.CheckFailoverReadiness(request, timeout=10)
    except grpc.RpcError as e:
        print(f"  readiness: unknown ({e.code().name}: {e.details()})", flush=True)
        return
    verdict = "READY to promote" if answer.ready else "not ready to promote"
    print(f"  readiness of {answer.site_id or site or 'this site'}: {verdict}", flush=True)
    for c in answer.criteria:
        print(f"    [{'x' if c.ok else ' '}] {c.name}: {c.detail}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addr", default="127.0.0.1:7600", help="the site's gRPC HOST:PORT")
    parser.add_argument("--site", default="",
                        help="the site whose readiness to print (default: the site watched, "
                             "when it is a secondary)")
    parser.add_argument("--changes", type=int, default=0,
                        help="stop after this many mode messages (0: watch until Ctrl-C)")
    parser.add_argument("--proto", default=DEFAULT_PROTO, help="the proto/ directory")
    parser.add_argument("--ca", help="CA certificate (PEM): connect with TLS")
    parser.add_argument("--cert", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", help="client key (PEM), for mutual TLS")
    args = parser.parse_args()

    generate_stubs(args.proto)
    from geo.v1 import mode_pb2, mode_pb2_grpc, status_pb2, status_pb2_grpc

    channel = channel_for(args)
    modes = mode_pb2_grpc.ModeServiceStub(channel)
    status = status_pb2_grpc.StatusServiceStub(channel)
    seen = 0
    try:
        for mode in modes.WatchMode(mode_pb2.WatchModeRequest()):
            print(describe(mode, mode_pb2), flush=True)
            print_readiness(status, status_pb2, args.site)
            seen += 1
            if args.changes and seen >= args.changes:
                return 0
    except grpc.RpcError as e:
        print(f"error: {args.addr}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    print(f"error: {args.addr} ended the watch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
