"""What a metrics write API's answer means for the batch: InfluxDB's and remote write's rules.

Both take a whole batch per request and answer for all of it:

* 2xx: written;
* 400 and 413: something in the batch is refused: ``WholeBatchRefused``, so
  ``send_bisecting`` halves it until the refused record stands alone and
  dead-letters only that one with the server's reason;
* 429 and 5xx: the whole batch is retried with backoff (``Retry-After``
  honoured);
* 401, 403 and 404: a configuration problem (credentials, a database or
  path that does not exist): the batch stays queued, health says failing and
  the log quotes the server, so fixing it loses nothing;
* other 4xx: dead-lettered with the server's reason.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet import defer

from obsd.delivery.contract import PermanentError, SendResult
from obsd.net.httpclient import retry_after
from obsd.outputs.bisect import WholeBatchRefused

KEEP_QUEUED = frozenset({401, 403, 404})


class WriteConfigError(ConnectionError):
    """A configuration problem the server names; the batch stays queued."""


def judge(code: int, reason: str, count: int, wait: float | None) -> SendResult | None:
    """None when written; a retry for overload; raises for refusals (see the module doc)."""
    if code < 300:
        return None
    if code == 429 or code >= 500:
        return SendResult(retry=list(range(count)), retry_reason=reason, retry_after=wait)
    if code in (400, 413):
        raise WholeBatchRefused(reason)
    if code in KEEP_QUEUED:
        raise WriteConfigError(reason)
    raise PermanentError(reason)


@defer.inlineCallbacks
def post(
    http: Any,
    url: str,
    body: bytes,
    headers: dict[bytes, list[bytes]],
    timeout: float,
    reactor: Any,
) -> Any:
    """POST one batch; fires with (status, body, Retry-After seconds or None)."""
    response = yield http.request(
        "POST", url, data=body, headers=headers, timeout=timeout, reactor=reactor
    )
    text = yield treq.content(response)
    return response.code, text, retry_after(response)
