"""The one HTTP client factory and TLS loader that every HTTP output uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from obsd.net.httpclient import make_http_client
from obsd.net.tls import check_tls_files, https_policy, load_trust_root
from obsd.outputs import elasticsearch, relay, sentry
from obsd.testing import make_output_context
from tests.tls_certs import make_certificates


def _connect_timeout(reactor: MemoryReactorClock) -> float:
    (connection,) = reactor.tcpClients
    return float(connection[3])


class TestConnectTimeout:
    def test_factory_passes_it_to_the_connection(self) -> None:
        """The connect timeout is the factory's own, not the request timeout."""
        reactor = MemoryReactorClock()
        client, pool = make_http_client(reactor, connect_timeout=2.5)
        client.request("POST", "http://127.0.0.1:9/x", data=b"{}")
        assert _connect_timeout(reactor) == 2.5
        assert pool.persistent
        assert not pool.retryAutomatically

    @pytest.mark.parametrize(
        ("module", "settings", "send"),
        [
            (relay, {"urls": ["http://127.0.0.1:9"], "connect_timeout": 1.5}, "relay"),
            (sentry, {"dsn": "http://" + "k" * 32 + "@127.0.0.1:9/1", "connect_timeout": 1.5}, "sentry"),
            (elasticsearch, {"urls": ["http://127.0.0.1:9"], "connect_timeout": 1.5,
                             "template": False, "batch_timeout": 0.0, "batch_size": 1}, "es"),
        ],
    )
    def test_every_http_output_connects_with_its_connect_timeout(
        self, tmp_path: Path, module: object, settings: dict[str, object], send: str
    ) -> None:
        """Relay and Sentry used to pass none or their request timeout; now each has its own."""
        reactor = MemoryReactorClock()
        context = make_output_context(reactor, tmp_path)  # type: ignore[arg-type]
        config = module.Config(type=module.__name__.rsplit(".", 1)[1], **settings)  # type: ignore[attr-defined]
        output = module.build_output(send, config, context)  # type: ignore[attr-defined]
        output.startService()
        if send == "sentry":
            output.accept({"kind": "log", "level": "error", "event": "boom", "id": "a" * 32,
                           "timestamp": 1.0, "host": "h", "source": "t"})
        else:
            output.accept({"kind": "log", "level": "info", "event": "hi", "id": "e1",
                           "timestamp": 1.0, "host": "h", "source": "t"})
        reactor.advance(1.0)
        assert _connect_timeout(reactor) == 1.5


class TestTls:
    def test_bundle_of_several_cas(self, tmp_path: Path) -> None:
        """A CA file may hold several certificates; each is trusted."""
        bundle = tmp_path / "ca.pem"
        bundle.write_bytes(make_certificates().ca_cert + make_certificates().ca_cert)
        assert load_trust_root(str(bundle)) is not None
        assert check_tls_files(str(bundle)) == []

    def test_problems_named_by_key(self, tmp_path: Path) -> None:
        """What check-config prints for each TLS key that cannot be used."""
        empty = tmp_path / "empty.pem"
        empty.write_text("hello")
        problems = dict(check_tls_files(str(empty), "", str(empty)))
        assert problems["ca_file"] == "cannot load CA bundle: no PEM certificate in the file"
        assert problems["key_file"] == "key_file needs cert_file"
        missing = dict(check_tls_files("", str(tmp_path / "nope.pem")))
        assert missing["cert_file"].startswith("cannot load client certificate: [Errno 2]")

    def test_client_certificate_policy(self, tmp_path: Path) -> None:
        """With a client certificate, every https host gets it with the trusted CAs."""
        certs = make_certificates()
        ca = tmp_path / "ca.pem"
        ca.write_bytes(certs.ca_cert)
        both = tmp_path / "client.pem"
        both.write_bytes(certs.server_cert + certs.server_key)
        policy = https_policy(str(ca), str(both))
        assert policy.creatorForNetloc(b"localhost", 443) is not None
