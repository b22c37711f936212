"""Regenerate the Sentry request fixtures from the real clients, with no network.

raven 6.10 and sentry-sdk build their requests exactly as they would for a
server; a recording transport keeps the URL, headers and body bytes instead of
sending them.  Run from the repository root::

    /work/venv/bin/python tests/data/sentry/record.py

and commit the files it writes next to itself: ``<case>.body`` (the request
body, byte for byte) and ``manifest.json`` (URL, headers and a note per case).
The bodies carry timestamps and random event ids, so every run differs; tests
read the ids from the bodies, never hard-code them.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import zlib
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
PUBLIC_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SECRET_KEY = "5ec2e7f00d5ec2e7f00d5ec2e7f00d12"
PROJECT_ID = 42
#: Port 9 (discard): nothing is ever sent, the transports below only record.
DSN_WITH_SECRET = f"http://{PUBLIC_KEY}:{SECRET_KEY}@127.0.0.1:9/{PROJECT_ID}"
DSN = f"http://{PUBLIC_KEY}@127.0.0.1:9/{PROJECT_ID}"

RECORDED: dict[str, dict[str, Any]] = {}
_BODIES: dict[str, bytes] = {}


def _keep(case: str, url: str, headers: dict[str, str], body: bytes, note: str) -> None:
    if case in RECORDED:
        msg = f"{case} recorded twice"
        raise RuntimeError(msg)
    RECORDED[case] = {"url": url, "headers": dict(headers), "note": note}
    _BODIES[case] = body


# --- raven 6.10 -------------------------------------------------------------


def record_raven() -> None:
    """captureException, captureMessage, the logging handler, DSN with and without secret."""
    from raven import Client  # type: ignore[import-untyped]
    from raven.handlers.logging import SentryHandler  # type: ignore[import-untyped]
    from raven.transport.base import Transport  # type: ignore[import-untyped]

    sent: list[tuple[str, bytes, dict[str, str]]] = []

    class RecordingTransport(Transport):  # type: ignore[misc]
        """raven's synchronous transport contract, keeping the request."""

        scheme: ClassVar[list[str]] = ["http", "https"]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def send(self, url: str, data: bytes, headers: dict[str, str]) -> None:
            sent.append((url, data, headers))

    def client(dsn: str) -> Any:
        return Client(
            dsn,
            transport=RecordingTransport,
            release="1.2.3",
            environment="test",
            name="web-1",
            tags={"region": "eu"},
            install_sys_hook=False,
            install_logging_hook=False,
            enable_breadcrumbs=False,
        )

    def last(case: str, note: str) -> None:
        url, data, headers = sent.pop()
        assert not sent, "raven sent more than one request"
        _keep(case, url, headers, data, note)

    # raven copies sys.argv into extra["sys.argv"]; a program given its DSN on
    # the command line leaks the secret this way, which the scrubber must catch.
    saved_argv = sys.argv
    sys.argv = ["worker.py", "--sentry-dsn", DSN_WITH_SECRET]
    try:
        with_secret = client(DSN_WITH_SECRET)
    finally:
        sys.argv = saved_argv
    with_secret.user_context({"id": "user-7", "email": "u7@example.invalid"})

    def load_orders(count: int) -> float:
        return inner_ratio(count)

    def inner_ratio(count: int) -> float:
        return 100 / (count - count)

    try:
        load_orders(3)
    except ZeroDivisionError:
        with_secret.captureException()
    last(
        "raven_exception",
        "raven 6.10 captureException, DSN with secret, real traceback",
    )

    with_secret.captureMessage("cache warmed in %s s", params=("1.5",), level="info")
    last("raven_message_secret", "raven 6.10 captureMessage, DSN with secret")

    without_secret = client(DSN)
    without_secret.captureMessage("disk almost full", level="warning")
    last("raven_message", "raven 6.10 captureMessage, DSN without secret")

    logger = logging.getLogger("billing.jobs")
    logger.propagate = False
    handler = SentryHandler(without_secret, level=logging.WARNING)
    logger.addHandler(handler)
    try:
        logger.error("invoice %s failed for %s", "INV-9", "acme")
        last(
            "raven_logging", "raven 6.10 logging SentryHandler, logger.error with args"
        )
        orders: dict[str, int] = {}
        try:
            orders["missing"]
        except KeyError:
            logger.exception("lookup failed")
        last("raven_logging_exc", "raven 6.10 logging SentryHandler, logger.exception")
    finally:
        logger.removeHandler(handler)

    # The form raven sent before it used Content-Encoding: base64 of zlib, no
    # header.  Built from a raven 6.10 body, since 6.10 no longer sends it.
    plain = zlib.decompress(_BODIES["raven_message"])
    legacy = RECORDED["raven_message"]
    headers = {k: v for k, v in legacy["headers"].items() if k != "Content-Encoding"}
    _keep(
        "raven_legacy_base64",
        legacy["url"],
        headers,
        base64.b64encode(zlib.compress(plain)),
        "older raven form (base64 of zlib, no Content-Encoding), made from raven_message",
    )


# --- sentry-sdk -------------------------------------------------------------


class _Response:
    """Just enough of urllib3's response for sentry-sdk's bookkeeping."""

    status = 200
    headers: ClassVar[dict[str, str]] = {}

    def close(self) -> None:
        pass


def record_sentry_sdk() -> None:
    """capture_exception, capture_message, a transaction with spans, an attachment, a session."""
    import sentry_sdk
    from sentry_sdk.transport import HttpTransport

    sent: list[tuple[str, bytes, dict[str, str]]] = []

    class RecordingTransport(HttpTransport):
        """The SDK's own HTTP transport (serialising, compressing, auth) minus the socket."""

        def _request(  # type: ignore[override]
            self, method: str, endpoint_type: Any, body: bytes, headers: dict[str, str]
        ) -> _Response:
            sent.append(
                (self._auth.get_api_url(endpoint_type), bytes(body), dict(headers))
            )
            return _Response()

    def init(compression: str | None = None, **options: Any) -> None:
        experiments: dict[str, Any] = {}
        if compression == "none":
            experiments["transport_compression_level"] = 0
        elif compression is not None:
            experiments["transport_compression_algo"] = compression
        sentry_sdk.init(
            dsn=DSN,
            transport=RecordingTransport,
            release="2.0.0",
            environment="prod",
            server_name="api-3",
            default_integrations=False,
            auto_session_tracking=False,
            send_client_reports=False,
            _experiments=experiments,  # type: ignore[arg-type]
            **options,
        )
        # Scopes outlive init(); start each case from empty ones.
        sentry_sdk.get_isolation_scope().clear()
        sentry_sdk.get_current_scope().clear()

    def take(case: str, note: str) -> None:
        sentry_sdk.flush(timeout=5)
        assert len(sent) == 1, f"{case}: expected one request, got {len(sent)}"
        url, body, headers = sent.pop()
        _keep(case, url, headers, body, note)

    def parse_order(raw: str) -> int:
        return int(raw)

    for compression, case in ((None, "sdk_exception"), ("gzip", "sdk_exception_gzip")):
        init(compression)
        sentry_sdk.set_tag("region", "us")
        sentry_sdk.set_user({"id": "user-42"})
        try:
            parse_order("forty-two")
        except ValueError:
            sentry_sdk.capture_exception()
        take(
            case,
            f"sentry-sdk capture_exception, compression {compression or 'default (br)'}",
        )

    init("none")
    sentry_sdk.capture_message("queue is backing up", level="warning")
    take("sdk_message", "sentry-sdk capture_message, uncompressed")

    init(traces_sample_rate=1.0)
    with sentry_sdk.start_transaction(name="GET /orders", op="http.server"):
        with sentry_sdk.start_span(op="db", name="SELECT * FROM orders"):
            pass
        with sentry_sdk.start_span(
            op="http.client", name="GET https://pay.example.invalid/"
        ):
            pass
    take("sdk_transaction", "sentry-sdk transaction with two spans, br")

    init()
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(
            bytes=b"order=17\nstate=stuck\n",
            filename="state.txt",
            content_type="text/plain",
        )
        sentry_sdk.capture_message("order stuck", level="error")
    take("sdk_attachment", "sentry-sdk capture_message with an attachment, br")

    init()
    scope = sentry_sdk.get_isolation_scope()
    scope.start_session()
    scope.end_session()
    take("sdk_session", "sentry-sdk session start and end, br")


def main() -> None:
    """Record every case and write the body files and manifest.json."""
    record_raven()
    record_sentry_sdk()
    for case, body in _BODIES.items():
        (HERE / f"{case}.body").write_bytes(body)
    manifest = {
        "public_key": PUBLIC_KEY,
        "secret_key": SECRET_KEY,
        "project_id": PROJECT_ID,
        "cases": RECORDED,
    }
    (HERE / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    )
    print(f"wrote {len(_BODIES)} cases to {HERE}")


if __name__ == "__main__":
    main()
