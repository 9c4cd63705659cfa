"""The controller's mutual-TLS identity towards the agents: its client certificate and key,
and the CA the agents' server certificates are checked against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # verifies the agents' certificates
    cert: Path  # the controller's client certificate (its CN or DNS SAN has a role on agents)
    key: Path
    # Checked against the agent's certificate instead of the endpoint's host, when the agents'
    # certificates do not name the address the controller reaches them at.
    server_name: str | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Read now, so a missing or unreadable file fails at start, with its name."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )
