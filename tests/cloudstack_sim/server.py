"""A CloudStack API endpoint on loopback: a real HTTP server (`/client/api`, GET or POST form),
requests verified as CloudStack verifies them, answers in its JSON shapes, and faults that a
test arranges in advance (an error status, a dropped connection, a slow answer).

    with CloudStackSimulator() as sim:
        client = CloudStackClient(CloudStackConfig(sim.url, sim.api_key, sim.secret_key))
        sim.fail_next(530, times=2)
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import Api, response_name
from .auth import VERIFY_FAILED, ApiUser, verify
from .jobs import ApiError, ForcedOutcome, JobQueue
from .seed import LabDisk, add_lab_vm, seed
from .world import VirtualMachine, World

ADMIN_API_KEY = "sim-admin-apikey-" + "x" * 64
ADMIN_SECRET_KEY = "sim-admin-secret-" + "y" * 64
JSON_TYPE = "application/json; charset=UTF-8"
# What a proxy in front of the management server answers when it has no server behind it.
PROXY_PAGE = "<html><body><h1>{status} Service Unavailable</h1></body></html>"
# ApiServer.CONTROL_CHARACTERS (server/src/main/java/com/cloud/api/ApiServer.java),
# "[\000-\011\013-\014\016-\037\177]": ASCII 0-31 and 127 but line feed and carriage return.
CONTROL_CHARACTERS = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
ERROR_TEXTS = {
    429: "There are too many API calls; please wait and try again",
    530: "Failed to process the request: internal error",
}


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "drop" or "delay"
    command: str | None = None  # None: any command
    status: int = 0
    seconds: float = 0.0
    retry_after: float | None = None


@dataclass(frozen=True)
class SimRequest:
    """One request as it arrived; `status` None when the connection was dropped."""

    method: str
    command: str | None
    params: dict[str, str]
    status: int | None


class CloudStackSimulator:
    def __init__(self, *, seeded: bool = True) -> None:
        self.world = World()
        if seeded:
            seed(self.world)
        self.jobs = JobQueue()
        self.api_key, self.secret_key = ADMIN_API_KEY, ADMIN_SECRET_KEY
        self.users = {self.api_key: ApiUser(self.api_key, self.secret_key, "admin")}
        self.api = Api(self.world, self.jobs, self.users)
        self.clock_skew = timedelta(0)  # added to this host's clock
        self.enforce_timestamps = False  # enforce.post.requests.and.timestamps
        self._faults: list[Fault] = []
        self._requests: list[SimRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life ----------------------------------------------------------------------------

    def start(self) -> CloudStackSimulator:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.sim = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CloudStackSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the simulator first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/client/api"

    def now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    # -- arranging faults and jobs ---------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        command: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The next `times` requests answer `status`: CloudStack's error body for 4xx/530,
        a proxy's HTML page for 502/503/504."""
        self._add(Fault("status", command, status=status, retry_after=retry_after), times)

    def drop_next(self, *, times: int = 1, command: str | None = None) -> None:
        """The next `times` requests get their connection closed without an answer."""
        self._add(Fault("drop", command), times)

    def delay_next(self, seconds: float, *, times: int = 1, command: str | None = None) -> None:
        """The next `times` requests are answered only after `seconds`."""
        self._add(Fault("delay", command, seconds=seconds), times)

    def fail_next_job(
        self, errorcode: int = 530, errortext: str = "Job failed", *, jobstatus: int = 2
    ) -> None:
        self.jobs.force_next(ForcedOutcome(jobstatus, errorcode, errortext))

    def add_lab_vm(
        self,
        *,
        instance_name: str,
        host_name: str,
        host_ip: str,
        disks: Sequence[LabDisk],
        state: str = "Running",
    ) -> VirtualMachine:
        return add_lab_vm(
            self.world,
            instance_name=instance_name,
            host_name=host_name,
            host_ip=host_ip,
            disks=disks,
            state=state,
        )

    def add_user(self, account: str, account_type: int) -> ApiUser:
        """A key pair of `account` (account_type: 0 user, 1 root admin, 2 domain admin)."""
        user = ApiUser(
            f"sim-{account}-apikey-" + "a" * 40,
            f"sim-{account}-secret-" + "b" * 40,
            account,
            account_type,
            username=account,
        )
        self.users[user.api_key] = user
        return user

    # -- what arrived ----------------------------------------------------------------------

    @property
    def requests(self) -> list[SimRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, command: str) -> list[SimRequest]:
        return [r for r in self.requests if r.command == command]

    # -- serving ---------------------------------------------------------------------------

    def _add(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def _take_fault(self, command: str | None) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.command in (None, command):
                    return self._faults.pop(index)
        return None

    def _record(self, method: str, params: dict[str, str], status: int | None) -> None:
        with self._lock:
            self._requests.append(SimRequest(method, params.get("command"), params, status))

    def serve(self, handler: _Handler, params: dict[str, list[str]]) -> None:
        first = {name: values[0] for name, values in params.items()}
        command = first.get("command")
        known = command is not None and command in self.api.commands
        name = response_name(command) if known and command else "errorresponse"
        fault = self._take_fault(command)
        if fault is not None and fault.kind == "drop":
            self._record(handler.command, first, None)
            handler.drop()
            return
        if fault is not None and fault.kind == "delay":
            self._stopping.wait(fault.seconds)
        if fault is not None and fault.kind == "status":
            self._record(handler.command, first, fault.status)
            self._answer_fault(handler, name, fault)
            return
        user = verify(
            params,
            self.users,
            now=self.now(),
            known_commands=self.api.commands,
            enforce_timestamps=self.enforce_timestamps,
        )
        if user is None:
            self._record(handler.command, first, 401)
            handler.send(401, _error_body(name, 401, VERIFY_FAILED, None))
            return
        bad = next((k for k, v in first.items() if CONTROL_CHARACTERS.search(v)), None)
        if bad is not None:  # ApiServer.handleRequest -> checkCharacterInkParams
            self._record(handler.command, first, 431)
            text = (
                "Received value containing illegal ASCII non-printable characters "
                f"for parameter {bad}"
            )
            handler.send(431, _error_body(name, 431, text, 9999))
            return
        if first.get("response") != "json":
            self._record(handler.command, first, 200)
            xml = f'<?xml version="1.0" encoding="UTF-8"?><{name} cloud-stack-version="4.19.1.0"/>'
            handler.send(200, xml.encode(), content_type="text/xml")
            return
        assert command is not None
        try:
            body = {name: self.api.handle(command, first, user)}
        except ApiError as exc:
            self._record(handler.command, first, exc.errorcode)
            handler.send(
                exc.errorcode, _error_body(name, exc.errorcode, exc.errortext, exc.cserrorcode)
            )
            return
        self._record(handler.command, first, 200)
        handler.send(200, _json(body))

    def _answer_fault(self, handler: _Handler, name: str, fault: Fault) -> None:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.status in (502, 503, 504):
            page = PROXY_PAGE.format(status=fault.status).encode()
            handler.send(fault.status, page, content_type="text/html", headers=headers)
            return
        text = ERROR_TEXTS.get(fault.status, f"simulated error {fault.status}")
        cserrorcode = 4250 if fault.status == 530 else 9999  # CloudRuntimeException / other
        body = _error_body(name, fault.status, text, cserrorcode)
        handler.send(fault.status, body, headers=headers)


def _error_body(name: str, errorcode: int, errortext: str, cserrorcode: int | None) -> bytes:
    error: dict[str, Any] = {"uuidList": [], "errorcode": errorcode}
    if cserrorcode is not None:
        error["cserrorcode"] = cserrorcode
    error["errortext"] = errortext
    return _json({name: error})


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "CloudStackSimulator/1"

    def do_GET(self) -> None:
        self._dispatch(urlsplit(self.path).query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        query = urlsplit(self.path).query
        self._dispatch(f"{query}&{body}" if query else body)

    def _dispatch(self, raw: str) -> None:
        params = parse_qs(raw, keep_blank_values=True)
        self.server.sim.serve(self, params)  # type: ignore[attr-defined]

    def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = JSON_TYPE,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read `requests` instead
