"""Splitting a batch a destination refused whole, to dead-letter only the culprit.

Elasticsearch (400/413 on a bulk request) and InfluxDB (400 on a write, 413)
answer for a whole request; halving the batch until the refused record stands
alone keeps every good record flowing.  The good halves are sent again, which
both destinations take idempotently (a document id, a point's series and time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer

from obsd.delivery.contract import SendResult


class WholeBatchRefused(Exception):  # noqa: N818 - a signal to split, not an error for users
    """The destination refused a whole request for something in it (the status and reason)."""


Post = Callable[[Sequence[bytes]], "defer.Deferred[SendResult | None]"]


@defer.inlineCallbacks
def send_bisecting(
    batch: Sequence[bytes], post: Post, on_split: Callable[[], Any] = lambda: None
) -> Any:
    """``post`` the batch; where it raises ``WholeBatchRefused``, split and post the halves.

    Fires with the merged ``SendResult`` (indices into ``batch``), or None when
    every record was delivered.  Depth is bounded by log2 of the batch size.
    """
    try:
        result = yield post(batch)
    except WholeBatchRefused as refusal:
        if len(batch) == 1:
            return SendResult(rejected=[(0, str(refusal))])
        on_split()
        half = len(batch) // 2
        merged = SendResult()
        for offset, part in ((0, batch[:half]), (half, batch[half:])):
            sub = yield send_bisecting(part, post, on_split)
            if sub is None:
                continue
            merged.retry.extend(offset + i for i in sub.retry)
            merged.rejected.extend((offset + i, why) for i, why in sub.rejected)
            merged.retry_reason = merged.retry_reason or sub.retry_reason
            if sub.retry_after is not None:
                merged.retry_after = max(merged.retry_after or 0.0, sub.retry_after)
        if not merged.retry and not merged.rejected:
            return None
        return merged
    return result
