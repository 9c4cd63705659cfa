"""Who a caller is: decided by the listener and the verified certificate's names."""

from __future__ import annotations

from agent.service.security import INSECURE_IDENTITY, LOCAL_IDENTITY, Authorizer, Role


class FakeContext:
    def __init__(self, peer: str, cn: list[str] = (), sans: list[str] = ()) -> None:  # type: ignore[assignment]
        self._peer = peer
        self._auth = {}
        if cn:
            self._auth["x509_common_name"] = [n.encode() for n in cn]
        if sans:
            self._auth["x509_subject_alternative_name"] = [n.encode() for n in sans]

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


ROLES = {"ctl": "operator", "monitor": "viewer", "boss": "admin"}


def test_the_unix_socket_caller_is_the_local_admin():
    assert Authorizer(ROLES, False).identify(FakeContext("unix:/run/x")) == (
        LOCAL_IDENTITY,
        Role.ADMIN,
    )


def test_a_certificate_named_local_root_is_no_one_special_over_tcp():
    who = Authorizer(ROLES, False).identify(FakeContext("ipv4:10.0.0.9:5000", cn=[LOCAL_IDENTITY]))
    assert who == (LOCAL_IDENTITY, None)


def test_sans_are_used_when_present_and_the_cn_only_without_them():
    auth = Authorizer(ROLES, False)
    assert auth.identify(FakeContext("ipv4:1.2.3.4:1", cn=["boss"], sans=["ctl"])) == (
        "ctl",
        Role.OPERATOR,
    )
    assert auth.identify(FakeContext("ipv4:1.2.3.4:1", cn=["monitor"])) == ("monitor", Role.VIEWER)


def test_several_names_get_the_least_role_among_them():
    auth = Authorizer(ROLES, False)
    assert auth.identify(FakeContext("ipv4:1.2.3.4:1", sans=["boss", "monitor"])) == (
        "monitor",
        Role.VIEWER,
    )


def test_no_certificate_is_unauthenticated_unless_insecure_development():
    assert Authorizer(ROLES, False).identify(FakeContext("ipv4:1.2.3.4:1")) == (None, None)
    assert Authorizer(ROLES, True).identify(FakeContext("ipv4:1.2.3.4:1")) == (
        INSECURE_IDENTITY,
        Role.ADMIN,
    )
