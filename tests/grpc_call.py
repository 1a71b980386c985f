"""A generic gRPC client for hostile calls: it knows nothing of geo-agent's protos, learns
every message type from the server's reflection, and sends whatever JSON it is given, as
an attacker with a stock client would.

Usage: grpc_call.py HOST:PORT < calls.json; prints one JSON list, an answer per call.

Each call is {"method": "geo.v1.Service/Method", "token": "...", "request": {...}} for a
unary or server-streaming method, or {"method": ..., "token": ..., "requests": [{...}, ...]}
for a client-streaming one. Field names are the proto's; bytes fields are base64, 64-bit
integers may be strings (protobuf's JSON mapping). An answer is {"code": "OK" | the status
code's name, "message": the status message, "responses": [the messages received, as JSON]}.
A server stream is read for at most `read` messages (default 1) and then cancelled.

Needs grpcio and grpcio-reflection (see .ci/run).
"""

import json
import os
import sys

import grpc
from google.protobuf import json_format, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generic_grpc import pool_for  # noqa: E402


def call(channel, spec):
    service_name, method_name = spec["method"].split("/")
    pool = pool_for(channel, service_name)
    method = pool.FindServiceByName(service_name).methods_by_name[method_name]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{service_name}/{method_name}"
    kwargs = dict(
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    metadata = [("authorization", "Bearer " + spec["token"])] if spec.get("token") else []
    to_json = lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
    responses = []
    try:
        if method.client_streaming:
            requests = [json_format.ParseDict(r, request_class()) for r in spec["requests"]]
            stub = channel.stream_unary(path, **kwargs)
            responses.append(to_json(stub(iter(requests), metadata=metadata, timeout=20)))
        elif method.server_streaming:
            request = json_format.ParseDict(spec.get("request", {}), request_class())
            stub = channel.unary_stream(path, **kwargs)
            stream = stub(request, metadata=metadata, timeout=20)
            for message in stream:
                responses.append(to_json(message))
                if len(responses) >= spec.get("read", 1):
                    stream.cancel()
                    break
        else:
            request = json_format.ParseDict(spec.get("request", {}), request_class())
            stub = channel.unary_unary(path, **kwargs)
            responses.append(to_json(stub(request, metadata=metadata, timeout=20)))
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.CANCELLED and responses:
            return {"code": "OK", "message": "", "responses": responses}
        return {"code": e.code().name, "message": e.details() or "", "responses": responses}
    return {"code": "OK", "message": "", "responses": responses}


def main():
    addr = sys.argv[1]
    calls = json.load(sys.stdin)
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(addr, options=options) as channel:
        print(json.dumps([call(channel, spec) for spec in calls]))


if __name__ == "__main__":
    main()
