"""Decode a LIST response one item at a time, so that listing holds one object, not one page.

A page is ``{"kind": ..., "apiVersion": ..., "metadata": {...}, "items": [...]}``. Decoded
whole, 200 Pending pods of 1 MiB peaked at 917 MiB at start (the body, its text and its objects
at once), and every restart or relist after a 410 ran out of memory again (issue 18). Here the
body is fed in chunks as it arrives; each element of ``items`` goes to ``on_item`` as soon as
its text is complete and is dropped before the next is decoded. The other top-level fields are
small and kept whole, in whatever order they come (kube-apiserver writes ``metadata`` first, but
nothing promises it).

Whether a value's text is complete is left to the standard library's decoder: ``raw_decode``
either returns the value or fails on text that is not (yet) whole. A failed attempt is retried
only once the pending text has doubled (or passed the bound), so a value arriving in many small
chunks costs about twice its decoding rather than once per chunk. Text beyond the bound without
a complete value in it is refused. Memory is one value's text (twice over while joining),
one chunk and the value itself, whatever the page holds.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["PageDecoder", "PageError"]


class PageError(ValueError):
    """The body is not a list page within bounds; the message is one line, without the text."""


def _no_constant(name: str) -> NoReturn:
    # NaN and Infinity are Python's extension, not JSON; the API server never writes them.
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*")
_VALUE_STARTS = frozenset('{["-0123456789tfn')
"""What a JSON value can start with: anything else is refused at once, not after the bound."""
_PARTIAL_TOKEN = 12
"""The longest tail that can be an unfinished token (``\\ud83d\\ude0``): a decoding error that
close to the end of the text is the text stopping, not the text being wrong."""
_MORE: Any = object()
"""Returned instead of a value whose text has not all arrived."""

_State = Callable[[], bool]


class PageDecoder:
    """Feed a page's body with :meth:`feed` chunk by chunk, then :meth:`finish`.

    ``on_item`` receives each element of ``items`` once, in order, while the body is read.
    ``fields`` holds the other top-level keys once finished. ``max_value_chars`` bounds the
    JSON text of any one value (an item, a field); ``fields`` together are bounded by it too.
    """

    def __init__(self, max_value_chars: int, on_item: Callable[[Any], None]) -> None:
        self.fields: dict[str, Any] = {}
        self._limit = max_value_chars
        self._on_item = on_item
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._pos = 0
        self._parts: list[str] = []
        self._parts_chars = 0
        self._waiting = 0
        """Pending characters when the last attempt ran out of text: retried at twice that."""
        self._fields_chars = 0
        self._key = ""
        self._items_seen = False
        self._final = False
        self._state: _State = self._page_start

    def feed(self, chunk: bytes) -> None:
        try:
            text = self._utf8.decode(chunk)
        except UnicodeDecodeError:
            raise PageError("the page is not UTF-8") from None
        if text:
            self._parts.append(text)
            self._parts_chars += len(text)
        pending = self._pending()
        if pending >= 2 * self._waiting or pending > self._limit:
            self._run()

    def finish(self) -> None:
        """The body has ended: decode what is left; a page not complete is a :class:`PageError`."""
        self.feed(b"")
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            # Only a character cut short is left to fail here, so the body stopped early.
            raise PageError("the page ends early") from None
        self._final = True
        self._run()
        if self._state != self._end:
            raise PageError("the page ends early")

    def _pending(self) -> int:
        return len(self._text) - self._pos + self._parts_chars

    def _run(self) -> None:
        # _text holds only unconsumed text here (see below), so the join copies nothing twice.
        self._text = "".join([self._text, *self._parts])
        self._parts.clear()
        self._parts_chars = 0
        while self._state():
            pass
        # Keep only the unfinished value: the text of the items just handed on (up to the bound
        # and a chunk) must not wait for the next attempt to be freed.
        self._text = self._text[self._pos :]
        self._pos = 0
        self._waiting = len(self._text)

    # Each state reads what it needs at the position and returns whether it moved on; False
    # means the text ran out and the state is tried again when more has arrived.

    def _page_start(self) -> bool:
        char = self._next_char()
        if not char:
            return False
        if char != "{":
            raise PageError("not an object list")
        self._pos += 1
        self._state = self._first_key
        return True

    def _first_key(self) -> bool:
        char = self._next_char()
        if not char:
            return False
        if char == "}":
            self._pos += 1
            self._state = self._end
        else:
            self._state = self._key_name
        return True

    def _key_name(self) -> bool:
        start = self._skip_whitespace()
        key = self._value("a field name")
        if key is _MORE:
            return False
        if not isinstance(key, str):
            raise PageError("the page is not JSON")
        self._count_field(self._pos - start)
        self._key = key
        self._state = self._colon
        return True

    def _colon(self) -> bool:
        char = self._next_char()
        if not char:
            return False
        if char != ":":
            raise PageError("the page is not JSON")
        self._pos += 1
        self._state = self._items_start if self._key == "items" else self._field_value
        return True

    def _field_value(self) -> bool:
        start = self._skip_whitespace()
        value = self._value("a field")
        if value is _MORE:
            return False
        self._count_field(self._pos - start)
        self.fields[self._key] = value
        self._state = self._after_value
        return True

    def _items_start(self) -> bool:
        char = self._next_char()
        if not char:
            return False
        if self._items_seen:
            # Decoded whole, the last "items" would win; streamed, the first is already handed on.
            raise PageError("items twice")
        if char == "[":
            self._items_seen = True
            self._pos += 1
            self._state = self._first_item
            return True
        value = self._value("items")
        if value is _MORE:
            return False
        if value is not None:  # null is an empty list, as the page's Go type allows
            raise PageError("items is not an array")
        self._state = self._after_value
        return True

    def _first_item(self) -> bool:
        char = self._next_char()
        if not char:
            return False
        if char == "]":
            self._pos += 1
            self._state = self._after_value
        else:
            self._state = self._item
        return True

    def _item(self) -> bool:
        self._skip_whitespace()
        item = self._value("an object")
        if item is _MORE:
            return False
        self._state = self._after_item
        # Handed on from this frame, which ends before the next item is decoded: the item is
        # gone (unless the consumer keeps it) by then.
        self._on_item(item)
        return True

    def _after_item(self) -> bool:
        return self._delimiter("]", self._item)

    def _after_value(self) -> bool:
        return self._delimiter("}", self._key_name)

    def _end(self) -> bool:
        if self._next_char():
            raise PageError("the page is not JSON")
        return False

    def _delimiter(self, closing: str, next_state: _State) -> bool:
        char = self._next_char()
        if not char:
            return False
        self._pos += 1
        if char == ",":
            self._state = next_state
        elif char == closing:
            self._state = self._after_value if closing == "]" else self._end
        else:
            raise PageError("the page is not JSON")
        return True

    def _skip_whitespace(self) -> int:
        match = _WHITESPACE.match(self._text, self._pos)
        assert match is not None  # the pattern matches the empty string
        self._pos = match.end()
        return self._pos

    def _next_char(self) -> str:
        """The next character that is not whitespace, without taking it; "" when none yet."""
        pos = self._skip_whitespace()
        return self._text[pos : pos + 1]

    def _value(self, what: str) -> Any:
        """The JSON value at the position, taken; :data:`_MORE` while its text is incomplete."""
        text, start = self._text, self._pos
        if start == len(text):
            return self._incomplete(what, truncated=True)
        if text[start] not in _VALUE_STARTS:
            raise PageError("the page is not JSON")
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            truncated = exc.msg.startswith("Unterminated string") or (
                exc.pos >= len(text) - _PARTIAL_TOKEN
            )
            return self._incomplete(what, truncated=truncated)
        except (ValueError, RecursionError):
            # An integer past Python's 4,300 digits, NaN, or nesting deeper than the stack:
            # more text cannot mend these.
            raise PageError("the page is not JSON") from None
        if type(value) in (int, float) and _NUMBER_TAIL.fullmatch(text, end):
            # "12" may be the start of "123", and "-4" of "-4.5e+6": a number is whole only
            # once something that cannot continue it follows.
            return self._incomplete(what, truncated=True)
        if end - start > self._limit:
            raise PageError(f"{what} longer than {self._limit} bytes")
        self._pos = end
        return value

    def _incomplete(self, what: str, *, truncated: bool) -> Any:
        if self._final:
            raise PageError("the page ends early" if truncated else "the page is not JSON")
        if self._pending() > self._limit:
            raise PageError(
                f"{what} longer than {self._limit} bytes" if truncated else "the page is not JSON"
            )
        return _MORE

    def _count_field(self, chars: int) -> None:
        self._fields_chars += chars
        if self._fields_chars > self._limit:
            raise PageError(f"the fields beside items longer than {self._limit} bytes")
