"""What the Kafka output and input share: how to reach the brokers.

The client is confluent-kafka (librdkafka in its wheels); these are the
connection settings both sides declare once, and librdkafka's names for them.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from obsd.config.schema import Problems, setting


@attrs.frozen(kw_only=True, slots=False)  # no slots: the Kafka configs mix it in
class KafkaClientConfig:
    """The brokers and how to talk to them (part of ``[outputs.kafka]`` and ``[inputs.kafka]``)."""

    bootstrap_servers: list[str] = setting(
        factory=lambda: ["127.0.0.1:9092"], help="host:port of brokers to start from"
    )
    security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = setting(
        "plaintext", help="how to talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = setting(
        "PLAIN", help="SASL mechanism (sasl_* protocols)"
    )
    sasl_username: str = setting("", help="SASL user")
    sasl_password: str = setting("", secret=True, help="SASL password")
    ca_file: str = setting("", help="PEM CA bundle that signs the brokers' certificates (ssl)")


class ClientLog:
    """librdkafka's own log lines into obsd's log, throttled per kind.

    Left alone, librdkafka writes every failed connection attempt to stderr,
    many a second while a broker is down.  Given as the client's ``logger``,
    its lines are handed over inside ``poll``/``consume`` (on the reactor
    thread) and logged once per ``fac`` (FAIL, REQTMOUT...) per throttle
    window, with a count of the rest.
    """

    def __init__(self, throttle: Any, owner: str) -> None:
        self._throttle = throttle
        self._owner = owner

    def log(self, level: int, message: str, *args: Any) -> None:
        facility, client, text = (*(str(a) for a in args), "", "", "")[:3]
        if not args:
            text = message
        log = self._throttle.error if level >= 40 else self._throttle.warning
        log(f"kafka:{self._owner}:{facility}", "kafka client", owner=self._owner,
            facility=facility, client=client, detail=text)


def client_settings(
    config: KafkaClientConfig, client_id: str, log: ClientLog | None = None
) -> dict[str, Any]:
    """librdkafka's connection settings for ``config``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "client.id": client_id,
        "security.protocol": config.security_protocol,
    }
    if log is not None:
        conf["logger"] = log
    if config.security_protocol.startswith("sasl"):
        conf["sasl.mechanism"] = config.sasl_mechanism
        conf["sasl.username"] = config.sasl_username
        conf["sasl.password"] = config.sasl_password
    if config.ca_file:
        conf["ssl.ca.location"] = config.ca_file
    return conf


def check_client(path: str, config: KafkaClientConfig, problems: Problems) -> None:
    """Brokers named; SASL with a user."""
    if not config.bootstrap_servers:
        problems.add(f"{path}.bootstrap_servers", "name at least one broker")
    if config.security_protocol.startswith("sasl") and not config.sasl_username:
        problems.add(f"{path}.sasl_username", "a SASL protocol needs sasl_username")
