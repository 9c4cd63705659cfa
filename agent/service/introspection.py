"""gRPC health and server reflection, each when its package is installed (Debian 12 packages
neither grpcio-health-checking nor grpcio-reflection).

Reflection answers on grpc.reflection.v1 as well as v1alpha: grpcurl, grpc_cli and Postman
ask v1 first, and grpcio-reflection (up to 1.85 at least) implements v1alpha only. The two
protocols are the same messages under another package name, so v1 is served by the same
servicer with v1alpha's message classes, and its file is described under the v1 name."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

log = logging.getLogger(__name__)

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> Any:
    """Returns the health servicer, if there is one (to report NOT_SERVING on the way out).
    Reflection lists `service_names`, health and both reflection services."""
    names = list(service_names)
    checker = None
    try:
        from grpc_health.v1 import health, health_pb2_grpc

        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        names.append(health.SERVICE_NAME)
    except ImportError:
        log.warning("grpcio-health-checking is not installed: no gRPC health service")
    try:
        from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
    except ImportError:
        log.warning("grpcio-reflection is not installed: no server reflection")
        return checker
    names += [reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    _describe_v1(reflection_pb2.DESCRIPTOR)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )
    return checker


async def set_health(checker: Any, service_name: str, serving: bool) -> None:
    if checker is None:
        return
    from grpc_health.v1 import health_pb2

    state = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (service_name, ""):
        await checker.set(name, state)


def _describe_v1(v1alpha: Any) -> None:
    """Adds grpc/reflection/v1/reflection.proto to the default pool (reflection's), made
    from v1alpha's file, unless something has already added v1."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(REFLECTION_V1)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = _V1_PACKAGE
    proto.ClearField("options")  # v1alpha's Java and C# package names
    _rename_types(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = _to_v1(method.input_type)
            method.output_type = _to_v1(method.output_type)
    try:
        pool.AddSerializedFile(proto.SerializeToString())
    except (TypeError, ValueError) as e:  # v1 is still served, only not described
        log.warning("reflection v1 cannot describe itself: %s", e)


def _rename_types(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = _to_v1(field.type_name)
        _rename_types(message.nested_type)


def _to_v1(type_name: str) -> str:
    return type_name.replace(f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}.", 1)
