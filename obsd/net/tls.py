"""The one TLS loader: trusted CAs and a client certificate from PEM files, for every client.

The Elasticsearch, relay, Sentry, InfluxDB and remote-write outputs (over
``obsd.net.httpclient``) and the syslog output (over a TLS endpoint) all trust
and present certificates the same way: a ``ca_file`` may hold several CAs, a
``key_file`` may be the ``cert_file`` itself.  Files are read when an output is
built, so ``check-config`` reports a bad one before the daemon starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

_END = "-----END CERTIFICATE-----"


def load_trust_root(ca_file: str) -> Any:
    """Every certificate of a PEM bundle as a trust root; ValueError when it holds none."""
    text = Path(ca_file).read_text()
    pems = [chunk + _END for chunk in text.split(_END) if "-----BEGIN" in chunk]
    if not pems:
        raise ValueError("no PEM certificate in the file")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(p.encode()) for p in pems])


def load_client_certificate(cert_file: str, key_file: str = "") -> ssl.PrivateCertificate:
    """A client certificate and its key (``key_file`` empty or equal: both in ``cert_file``)."""
    pem = Path(cert_file).read_bytes()
    if key_file and key_file != cert_file:
        pem += b"\n" + Path(key_file).read_bytes()
    certificate: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(pem)
    return certificate


def check_tls_files(
    ca_file: str, cert_file: str = "", key_file: str = ""
) -> list[tuple[str, str]]:
    """(key, reason) for each file that cannot be loaded: what ``check_config`` reports."""
    problems: list[tuple[str, str]] = []
    if ca_file:
        try:
            load_trust_root(ca_file)
        except (OSError, ValueError, SSL.Error) as exc:
            problems.append(("ca_file", f"cannot load CA bundle: {exc}"))
    if key_file and not cert_file:
        problems.append(("key_file", "key_file needs cert_file"))
    elif cert_file:
        try:
            load_client_certificate(cert_file, key_file)
        except (OSError, ValueError, SSL.Error) as exc:
            problems.append(("cert_file", f"cannot load client certificate: {exc}"))
    return problems


def client_tls_options(
    hostname: str, ca_file: str = "", cert_file: str = "", key_file: str = ""
) -> IOpenSSLClientConnectionCreator:
    """TLS options for one server name: its CA bundle (or the system's) and a client cert."""
    trust = load_trust_root(ca_file) if ca_file else None
    client = load_client_certificate(cert_file, key_file) if cert_file else None
    return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client)


def https_policy(ca_file: str = "", cert_file: str = "", key_file: str = "") -> Any:
    """An ``IPolicyForHTTPS`` for an Agent: the same trust and client certificate per host."""
    if not cert_file:
        trust = load_trust_root(ca_file) if ca_file else None
        return BrowserLikePolicyForHTTPS(trustRoot=trust)
    return _ClientCertPolicy(ca_file, cert_file, key_file)


@implementer(IPolicyForHTTPS)
class _ClientCertPolicy:
    """Trust ``ca_file`` and present a client certificate to every https host."""

    def __init__(self, ca_file: str, cert_file: str, key_file: str) -> None:
        self._files = (ca_file, cert_file, key_file)
        # loaded once here, so a bad file fails when the output is built
        load_client_certificate(cert_file, key_file)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return client_tls_options(hostname.decode("ascii"), *self._files)
