"""A generic gRPC client, in another language than the server, that knows nothing of
geo-agent's protos: it asks the standard health service, discovers every service through
server reflection (v1alpha and v1), and calls GetMode from the descriptors it was served.

Usage: generic_grpc.py HOST:PORT; prints one JSON object.
Needs grpcio, grpcio-health-checking and grpcio-reflection (see .ci/run).
"""

import json
import sys
from importlib import import_module

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# v1 is v1alpha under a new package name: the messages are identical on the wire.
V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def reflect(channel, path, request):
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request]), timeout=10))
    if response.HasField("error_response"):
        raise RuntimeError(response.error_response.error_message)
    return response


def services(channel, path):
    r = reflect(channel, path, reflection_pb2.ServerReflectionRequest(list_services=""))
    return sorted(s.name for s in r.list_services_response.service)


def pool_for(channel, symbol):
    """A descriptor pool holding `symbol`'s file and everything it imports, fetched by
    reflection; well-known types the server does not serve come from the runtime."""
    r = reflect(
        channel, V1, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    )
    files = {}
    pending = list(r.file_descriptor_response.file_descriptor_proto)
    while pending:
        f = descriptor_pb2.FileDescriptorProto.FromString(pending.pop())
        files[f.name] = f
        for dep in f.dependency:
            if dep in files or any(
                descriptor_pb2.FileDescriptorProto.FromString(p).name == dep for p in pending
            ):
                continue
            try:
                got = reflect(
                    channel, V1, reflection_pb2.ServerReflectionRequest(file_by_filename=dep)
                )
                pending.extend(got.file_descriptor_response.file_descriptor_proto)
            except RuntimeError:
                if not dep.startswith("google/protobuf/"):
                    raise
                well_known = import_module(
                    "google.protobuf." + dep.rsplit("/", 1)[1].replace(".proto", "_pb2")
                )
                files[dep] = descriptor_pb2.FileDescriptorProto.FromString(
                    well_known.DESCRIPTOR.serialized_pb
                )
    pool = descriptor_pool.DescriptorPool()
    added = set()
    while len(added) < len(files):
        ready = [
            f for name, f in files.items()
            if name not in added and all(d in added for d in f.dependency)
        ]
        if not ready:
            raise RuntimeError("unresolvable imports in reflected files")
        for f in ready:
            pool.Add(f)
            added.add(f.name)
    return pool


def main():
    addr = sys.argv[1]
    out = {}
    with grpc.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        out["health"] = {}
        for name in ["", "geo.v1.ModeService", "geo.v1.ObjectService", "geo.v1.AdminService"]:
            r = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            out["health"][name] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            out["health_unknown"] = "answered"
        except grpc.RpcError as e:
            out["health_unknown"] = e.code().name

        out["services_v1alpha"] = services(channel, V1ALPHA)
        out["services_v1"] = services(channel, V1)

        pool = pool_for(channel, "geo.v1.ModeService")
        service = pool.FindServiceByName("geo.v1.ModeService")
        method = service.methods_by_name["GetMode"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        get_mode = channel.unary_unary(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        reply = get_mode(request_class(), timeout=10)
        out["get_mode"] = {
            field.name: value
            for field, value in reply.ListFields()
            if field.type != field.TYPE_MESSAGE
        }
        out["get_mode_type"] = method.output_type.full_name
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
