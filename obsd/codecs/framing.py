"""Incremental framers that cut a syslog byte stream into messages (RFC 6587).

Each framer is fed whatever a stream transport delivers and returns the
complete messages in it as ``Frame(message, truncated)`` tuples; ``flush()``
returns what is left when the connection closes.  A message longer than
``max_message_size`` is cut to that size and flagged ``truncated``, never
dropped, and the framer never holds more than about ``max_message_size``
bytes of one message.  A broken octet count raises ``FramingError`` (an
``obsd.errors.ParseError``) so that the caller closes only that connection;
it carries the messages completed before the error, so none of them is lost.

The framers work on whole chunks with ``bytes.find``/``split``: no Python
loop runs per byte.
"""

from __future__ import annotations

from typing import Final, NamedTuple, Protocol

from obsd.errors import ParseError

#: Default largest message, in bytes (the issue's 64 KiB).
DEFAULT_MAX_MESSAGE_SIZE: Final = 65536
#: Longest octet count accepted: 10 digits is far beyond any sane size.
_MAX_COUNT_DIGITS: Final = 10
_DIGITS: Final = frozenset(b"0123456789")


class Frame(NamedTuple):
    """One message cut from a stream; ``truncated`` if it was longer than allowed."""

    message: bytes
    truncated: bool = False


class FramingError(ParseError):
    """A broken octet count; ``frames`` holds the messages completed before it."""

    def __init__(self, message: str, frames: list[Frame]) -> None:
        super().__init__(message)
        self.frames = frames


class Framer(Protocol):
    """What every framer offers to a stream protocol."""

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next chunk of the stream and return the messages it completes."""
        ...

    def flush(self) -> list[Frame]:
        """Return what is left at connection close."""
        ...


class _DelimiterFramer:
    """Messages end with one delimiter byte; empty messages are skipped."""

    __slots__ = (
        "_delimiter",
        "_max",
        "_pending",
        "_pending_len",
        "_skipping",
        "_strip",
    )

    def __init__(
        self,
        delimiter: bytes,
        strip: bytes,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._delimiter = delimiter
        self._strip = strip  # trailing bytes removed from each message (CR before LF)
        self._max = max_message_size
        self._pending: list[bytes] = []
        self._pending_len = 0
        # After a cut, the rest of that message up to its delimiter is discarded.
        self._skipping = False

    def _emit(self, message: bytes, out: list[Frame]) -> None:
        if self._strip:
            message = message.rstrip(self._strip)
        if not message:
            return
        if len(message) > self._max:
            out.append(Frame(message[: self._max], True))
        else:
            out.append(Frame(message, False))

    def feed(self, data: bytes) -> list[Frame]:
        """Return the messages ``data`` completes."""
        out: list[Frame] = []
        end = data.find(self._delimiter)
        if end < 0:
            self._hold(data, out)
            return out
        head = data[:end]
        if self._skipping:
            self._skipping = False
        elif self._pending:
            self._pending.append(head)
            self._emit(b"".join(self._pending), out)
        else:
            self._emit(head, out)
        self._pending = []
        self._pending_len = 0
        parts = data[end + 1 :].split(self._delimiter)
        rest = parts.pop()
        for part in parts:
            self._emit(part, out)
        self._hold(rest, out)
        return out

    def _hold(self, data: bytes, out: list[Frame]) -> None:
        """Keep an unfinished message, cutting it once it is longer than allowed."""
        if self._skipping or not data:
            return
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len > self._max:
            message = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
            out.append(Frame(message[: self._max], True))
            self._skipping = True

    def flush(self) -> list[Frame]:
        """Return the unterminated last message, if any."""
        out: list[Frame] = []
        if self._pending:
            self._emit(b"".join(self._pending), out)
        self._pending = []
        self._pending_len = 0
        self._skipping = False
        return out


class NewlineFramer(_DelimiterFramer):
    """Non-transparent framing with LF (RFC 6587 3.4.2); a CR before the LF is dropped."""

    __slots__ = ()

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(b"\n", b"\r", max_message_size)


class NulFramer(_DelimiterFramer):
    """Messages end with NUL, as Python's SysLogHandler sends them over TCP.

    LFs inside a message (a traceback) stay in it; trailing CR/LF is dropped.
    """

    __slots__ = ()

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        super().__init__(b"\0", b"\r\n", max_message_size)


class OctetCountingFramer:
    """Octet counting (RFC 6587 3.4.1, RFC 5425): ``MSG-LEN SP MSG``."""

    __slots__ = ("_buf", "_max", "_need", "_skip")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._buf = bytearray()
        self._need = (
            -1
        )  # bytes of the current message still expected; -1: reading a count
        self._skip = 0  # bytes of an over-long message still to discard

    def feed(self, data: bytes) -> list[Frame]:
        """Return the messages ``data`` completes; raise FramingError on a bad count."""
        out: list[Frame] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while pos < size:
            if self._need < 0:
                space = buf.find(b" ", pos, pos + _MAX_COUNT_DIGITS + 1)
                if space < 0:
                    if size - pos > _MAX_COUNT_DIGITS or not _all_digits(buf[pos:size]):
                        raise FramingError(
                            f"bad octet count {bytes(buf[pos : pos + 16])!r}", out
                        )
                    break
                count = buf[pos:space]
                if not count or not _all_digits(count):
                    raise FramingError(f"bad octet count {bytes(buf[pos : pos + 16])!r}", out)
                self._need = int(count)
                pos = space + 1
                continue
            need = self._need
            if need > self._max:
                # Keep the first max bytes, discard the rest as it arrives.
                if size - pos < self._max:
                    break
                out.append(Frame(bytes(buf[pos : pos + self._max]), True))
                available = size - pos
                if available >= need:
                    pos += need
                else:
                    self._skip = need - available
                    pos = size
                self._need = -1
                continue
            if size - pos < need:
                break
            if need:
                out.append(Frame(bytes(buf[pos : pos + need]), False))
            pos += need
            self._need = -1
        del buf[:pos]
        return out

    def flush(self) -> list[Frame]:
        """Return a message cut short by the close, flagged truncated."""
        out: list[Frame] = []
        if self._need > 0 and self._buf:
            out.append(Frame(bytes(self._buf[: self._max]), True))
        self._buf = bytearray()
        self._need = -1
        self._skip = 0
        return out


def _all_digits(data: bytes | bytearray) -> bool:
    return bool(data) and not data.translate(None, b"0123456789")


class AutoFramer:
    """Detect the framing from the start of each connection, then stick to it.

    - digits, a space and ``<``: octet counting;
    - a NUL anywhere before the framing is known: NUL trailer (SysLogHandler
      over TCP, whose tracebacks contain LFs before the NUL);
    - an LF at the end of the data so far, or followed by ``<``: LF.

    Otherwise it waits for more data, up to ``max_message_size`` bytes, and
    then falls back to LF.  One cut stays ambiguous: if the first chunk of a
    NUL-framed stream ends right after an LF, the stream is taken as LF-framed
    (waiting longer would stall a quiet LF sender).  SysLogHandler writes each
    message with one ``sendall``, so that cut is rare; ``framing = "nul"`` forces it.
    """

    __slots__ = ("_buf", "_framer", "_max")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._buf = b""
        self._framer: Framer | None = None

    @property
    def framer(self) -> Framer | None:
        """The framer chosen for this connection, None while undecided."""
        return self._framer

    def feed(self, data: bytes) -> list[Frame]:
        """Return the messages ``data`` completes, deciding the framing first."""
        if self._framer is not None:
            return self._framer.feed(data)
        buf = self._buf + data if self._buf else data
        framer = self._decide(buf)
        if framer is None:
            self._buf = buf
            return []
        self._buf = b""
        self._framer = framer
        return framer.feed(buf)

    def _decide(self, buf: bytes) -> Framer | None:
        buf = buf.lstrip(b"\r\n\0")
        if not buf:
            return None
        if buf[0] in _DIGITS:
            space = buf.find(b" ", 0, _MAX_COUNT_DIGITS + 1)
            if space < 0:
                if len(buf) <= _MAX_COUNT_DIGITS and _all_digits(buf):
                    return None  # maybe the start of an octet count
            elif _all_digits(buf[:space]):
                if space + 1 == len(buf):
                    return None
                if buf[space + 1] == 0x3C:  # "<"
                    return OctetCountingFramer(self._max)
        if b"\0" in buf:
            return NulFramer(self._max)
        last_lf = buf.rfind(b"\n")
        if last_lf >= 0 and (last_lf == len(buf) - 1 or buf[last_lf + 1] == 0x3C):
            return NewlineFramer(self._max)
        if len(buf) > self._max:
            return NewlineFramer(self._max)
        return None

    def flush(self) -> list[Frame]:
        """Return what is left, read as LF-framed if the framing was never decided."""
        if self._framer is None:
            framer = NewlineFramer(self._max)
            out = framer.feed(self._buf)
            self._buf = b""
            return out + framer.flush()
        return self._framer.flush()


#: Names accepted by ``make_framer`` (the ``framing`` config option).
FRAMINGS: Final = ("auto", "octet", "lf", "nul")


def make_framer(
    framing: str, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> Framer:
    """Return a new framer for one connection; ``framing`` is one of ``FRAMINGS``."""
    if framing == "auto":
        return AutoFramer(max_message_size)
    if framing == "octet":
        return OctetCountingFramer(max_message_size)
    if framing == "lf":
        return NewlineFramer(max_message_size)
    if framing == "nul":
        return NulFramer(max_message_size)
    raise ValueError(
        f"unknown framing {framing!r}; expected one of {', '.join(FRAMINGS)}"
    )
