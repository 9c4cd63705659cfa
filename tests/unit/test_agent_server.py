"""The agent's own gRPC server (app.build_server with the real servicer, over a fake host) on
a real TCP listener with mutual TLS and certificates made for the test: who gets in, what
every RPC answers a caller without a role, and what server reflection lists on v1 and
v1alpha."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from agent import cli
from agent.service.app import SERVICE_NAME, build_server
from agent.service.executor import JobExecutor
from agent.service.introspection import REFLECTION_V1, add_health_and_reflection
from agent.service.servicer import AgentServicer
from agent.settings import ListenSettings, Settings, TlsSettings
from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc
from tests.lab.agent_process import free_port, make_ca, make_cert, openssl

T = TypeVar("T")
HEALTH = "grpc.health.v1.Health"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
ROLES = {"ctl-viewer": "viewer", "ctl-operator": "operator"}


@dataclass
class Certificates:
    directory: Path
    ca: Path

    def client(self, who: str) -> grpc.ChannelCredentials:
        """ctl-viewer, ctl-operator, nobody (signed by the CA, in no role), stranger (from
        another CA, named as the operator), or "" for none."""
        if not who:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=(self.directory / f"{who}.key").read_bytes(),
            certificate_chain=(self.directory / f"{who}.crt").read_bytes(),
        )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "test-ca")
    make_cert(directory, ca, "agent", "IP:127.0.0.1,DNS:localhost")
    for who in ("ctl-viewer", "ctl-operator", "nobody"):
        make_cert(directory, ca, who, f"DNS:{who}")
    make_cert(directory, make_ca(directory, "stranger-ca"), "stranger", "DNS:ctl-operator")
    nameless(directory, ca)
    return Certificates(directory, ca[1])


def nameless(directory: Path, ca: tuple[Path, Path]) -> None:
    """A certificate of the CA with neither a CN nor a subject alternative name."""
    key, csr, cert = (directory / f"nameless.{ext}" for ext in ("key", "csr", "crt"))
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/O=hostsnap",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-out", str(cert),
    )  # fmt: skip


class FakeHost:
    """Stands for libvirt, Ceph and the journal: answers GetHostInfo, counts what else the
    servicer reached (nothing, for a caller that is refused)."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.journal = SimpleNamespace(listeners=[], jobs=self._touch("journal.jobs", []))
        self.host = SimpleNamespace(versions=lambda: ("9.0.0", "7.2.0"))
        self.rbd = SimpleNamespace(client_version=lambda: "16.2.11")

    def _touch(self, name: str, value: Any) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.reached.append(name)
            return value

        return call

    def __getattr__(self, name: str) -> Any:
        self.reached.append(name)
        raise AssertionError(f"the servicer reached svc.{name}")


def with_server(
    certificates: Certificates,
    test: Callable[[str, FakeHost], Awaitable[T]],
    *,
    require_client_auth: bool = True,
) -> T:
    async def main() -> T:
        host = FakeHost()
        endpoint = f"127.0.0.1:{free_port()}"
        settings = Settings(
            listen=ListenSettings(unix_socket="", tcp=endpoint),
            tls=TlsSettings(
                cert=str(certificates.directory / "agent.crt"),
                key=str(certificates.directory / "agent.key"),
                client_ca=str(certificates.ca),
            ),
            roles=ROLES,
            audit_log=str(certificates.directory / "audit.log"),
        )
        executor = JobExecutor(1, lambda job_id, why: None)
        servicer = AgentServicer(host, settings, executor)  # type: ignore[arg-type]
        if require_client_auth:
            server, _ = build_server(settings, servicer)
        else:
            server = plain_tls_server(settings, servicer)
        await server.start()
        try:
            return await test(endpoint, host)
        finally:
            await server.stop(None)
            executor.shutdown()

    return asyncio.run(main())


def plain_tls_server(settings: Settings, servicer: AgentServicer) -> grpc.aio.Server:
    """The agent's service on a listener that does not require a client certificate."""
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(Path(settings.tls.key).read_bytes(), Path(settings.tls.cert).read_bytes())],
        root_certificates=Path(settings.tls.client_ca).read_bytes(),
        require_client_auth=False,
    )
    server.add_secure_port(settings.listen.tcp, credentials)
    return server


async def host_info(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError | pb.HostInfo:
    try:
        reply: pb.HostInfo = await agent_pb2_grpc.AgentServiceStub(channel).GetHostInfo(
            pb.GetHostInfoRequest(), timeout=10
        )
        return reply
    except grpc.aio.AioRpcError as e:
        return e


async def health_check(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError | Any:
    try:
        return await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    except grpc.aio.AioRpcError as e:
        return e


# who gets in


@pytest.mark.parametrize("who", ["", "stranger"], ids=["no certificate", "another CA's"])
def test_a_client_without_a_certificate_of_the_client_ca_fails_the_handshake(
    certificates: Certificates, who: str
):
    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client(who)) as channel:
            for answer in (await host_info(channel), await health_check(channel)):
                assert isinstance(answer, grpc.aio.AioRpcError)
                assert answer.code() == grpc.StatusCode.UNAVAILABLE
        assert host.reached == []

    with_server(certificates, test)


def test_a_viewer_may_look_and_not_change(certificates: Certificates):
    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("ctl-viewer")) as ch:
            info = await host_info(ch)
            assert isinstance(info, pb.HostInfo) and info.libvirt_version == "9.0.0"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await agent_pb2_grpc.AgentServiceStub(ch).CreateSnapshot(
                    pb.CreateSnapshotRequest(domain="vm"), timeout=10
                )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ctl-viewer has viewer; CreateSnapshot needs the operator role" in str(
            refused.value.details()
        )

    with_server(certificates, test)


def agent_methods() -> Iterator[Any]:
    yield from pb.DESCRIPTOR.services_by_name["AgentService"].methods


@pytest.mark.parametrize("method", agent_methods(), ids=lambda m: m.name)
def test_every_agent_rpc_refuses_a_certificate_in_no_role_before_doing_anything(
    certificates: Certificates, method: Any
):
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{SERVICE_NAME}/{method.name}"

    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("nobody")) as ch:
            kind = ch.unary_stream if method.server_streaming else ch.unary_unary
            call = kind(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=reply_class.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                answer = call(request_class(), timeout=10)
                if method.server_streaming:
                    async for _ in answer:
                        pass
                else:
                    await answer
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
        assert f"nobody has no role; {method.name} needs the" in str(refused.value.details())
        assert host.reached == []

    assert not method.client_streaming  # a client stream would need a test of its own
    with_server(certificates, test)


@pytest.mark.parametrize("rpc", ["GetHostInfo", "WatchJob"])
def test_a_certificate_naming_no_one_is_unauthenticated(certificates: Certificates, rpc: str):
    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("nameless")) as ch:
            stub = agent_pb2_grpc.AgentServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                if rpc == "GetHostInfo":
                    await stub.GetHostInfo(pb.GetHostInfoRequest(), timeout=10)
                else:
                    async for _ in stub.WatchJob(pb.WatchJobRequest(job_id="a" * 32), timeout=10):
                        pass
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == (
            "the client certificate has no CN or subject alternative name to hold a role"
        )
        assert host.reached == []

    with_server(certificates, test)


def test_the_cli_says_what_to_check_when_the_handshake_is_refused(
    certificates: Certificates, capsys: pytest.CaptureFixture[str]
):
    directory = certificates.directory

    async def test(endpoint: str, host: FakeHost) -> tuple[int, int]:
        def run(who: str) -> int:
            return cli.main(
                [
                    "--endpoint", endpoint, "--cert", str(directory / f"{who}.crt"),
                    "--key", str(directory / f"{who}.key"), "--ca", str(certificates.ca),
                    "--timeout", "10", "status",
                ]
            )  # fmt: skip

        return await asyncio.to_thread(run, "stranger"), await asyncio.to_thread(run, "ctl-viewer")

    refused, viewer = with_server(certificates, test)
    assert (refused, viewer) == (5, 0)
    assert "is --cert signed by the agent's client CA" in capsys.readouterr().err


def test_health_and_reflection_are_open_to_any_certificate_of_the_client_ca(
    certificates: Certificates,
):
    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("nobody")) as ch:
            assert not isinstance(await health_check(ch), grpc.aio.AioRpcError)
            assert SERVICE_NAME in await list_services(ch, V1ALPHA)

    with_server(certificates, test)


def test_grpcio_cannot_ask_for_a_client_certificate_without_requiring_it(
    certificates: Certificates,
):
    """Why the listener requires the certificate in the handshake, so that a client without
    one sees UNAVAILABLE rather than UNAUTHENTICATED: with require_client_auth=False grpcio
    does not ask for a certificate at all (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE; Python
    has no request-but-verify mode), so even a valid one never reaches the servicer. When
    this test fails, grpcio verifies an offered certificate and UNAUTHENTICATED is possible."""

    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("ctl-viewer")) as ch:
            answer = await host_info(ch)
        assert isinstance(answer, grpc.aio.AioRpcError)
        assert answer.code() == grpc.StatusCode.UNAUTHENTICATED

    with_server(certificates, test, require_client_auth=False)


# reflection


@dataclass(frozen=True)
class Reflection:
    """One version of the reflection protocol, spoken with that version's own messages."""

    package: str

    def message(self, name: str) -> Any:
        pool = descriptor_pool.Default()
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{self.package}.{name}"))

    def call(self, channel: grpc.aio.Channel) -> Any:
        return channel.stream_stream(
            f"/{self.package}.ServerReflection/ServerReflectionInfo",
            request_serializer=self.message("ServerReflectionRequest").SerializeToString,
            response_deserializer=self.message("ServerReflectionResponse").FromString,
        )


V1 = Reflection("grpc.reflection.v1")
V1ALPHA = Reflection("grpc.reflection.v1alpha")


async def ask(channel: grpc.aio.Channel, version: Reflection, **request: Any) -> Any:
    call = version.call(channel)(iter([version.message("ServerReflectionRequest")(**request)]))
    (answer,) = [reply async for reply in call]
    return answer


async def list_services(channel: grpc.aio.Channel, version: Reflection) -> list[str]:
    answer = await ask(channel, version, list_services="")
    return [s.name for s in answer.list_services_response.service]


@pytest.mark.parametrize("version", [V1, V1ALPHA], ids=["v1", "v1alpha"])
def test_reflection_lists_the_agent_health_and_both_reflection_services(
    certificates: Certificates, version: Reflection
):
    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("ctl-viewer")) as ch:
            listed = await list_services(ch, version)
            assert sorted(listed) == sorted(
                [SERVICE_NAME, HEALTH, REFLECTION_V1ALPHA, REFLECTION_V1]
            )
            for symbol in listed:
                answer = await ask(ch, version, file_containing_symbol=symbol)
                assert answer.WhichOneof("message_response") == "file_descriptor_response", symbol
                described = descriptor_pb2.FileDescriptorProto.FromString(
                    answer.file_descriptor_response.file_descriptor_proto[0]
                )
                package, _, service = symbol.rpartition(".")
                assert described.package == package
                assert service in [s.name for s in described.service]

    with_server(certificates, test)


def test_the_v1_description_is_v1alpha_under_the_v1_package():
    async def build() -> None:
        add_health_and_reflection(grpc.aio.server(), [SERVICE_NAME])

    asyncio.run(build())
    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    descriptor_pool.Default().FindFileContainingSymbol(REFLECTION_V1).CopyToProto(ours)
    reflection_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.name == "grpc/reflection/v1/reflection.proto"
    theirs.name = ours.name
    theirs.ClearField("options")
    v1alpha = text_format.MessageToString(theirs)
    assert "v1alpha" in v1alpha
    assert text_format.MessageToString(ours) == v1alpha.replace("v1alpha", "v1")


def test_without_the_health_and_reflection_packages_the_agent_still_serves(
    certificates: Certificates, monkeypatch: pytest.MonkeyPatch
):
    for module in ("grpc_health.v1", "grpc_reflection.v1alpha"):
        monkeypatch.setitem(sys.modules, module, None)  # as on Debian 12

    async def test(endpoint: str, host: FakeHost) -> None:
        async with grpc.aio.secure_channel(endpoint, certificates.client("ctl-viewer")) as ch:
            assert isinstance(await host_info(ch), pb.HostInfo)
            health = await health_check(ch)
            assert isinstance(health, grpc.aio.AioRpcError)
            assert health.code() == grpc.StatusCode.UNIMPLEMENTED

    with_server(certificates, test)
