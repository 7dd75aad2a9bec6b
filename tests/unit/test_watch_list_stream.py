"""A LIST page is decoded item by item as its body arrives (issue 18: 200 pods of 1 MiB decoded
page by page peaked at 917 MiB at start). The decoder is fed chunks cut at every awkward place;
then Watch._list streams a page from a local server and holds about one object, not the page."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archwarden import kube
from archwarden.kube import _listing

from .test_watch import FakeApi, serving

MiB = 1024 * 1024


def decode(chunks: Iterable[bytes], limit: int = MiB) -> tuple[list[Any], dict[str, Any]]:
    items: list[Any] = []
    decoder = _listing.PageDecoder(limit, items.append)
    for chunk in chunks:
        decoder.feed(chunk)
    decoder.finish()
    return items, decoder.fields


def cut(data: bytes, *at: int) -> list[bytes]:
    bounds = [0, *sorted(at), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def expected(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    page = json.loads(data)
    return page.pop("items", None) or [], page


# Escaped quotes and backslashes, \u escapes (a surrogate pair among them), raw multi-byte UTF-8,
# numbers that end an item (12 could still become 123), literals, nesting, and every kind of
# JSON whitespace between tokens.
AWKWARD = (
    '{ "kind" :"PodList",\t"items": [ {"metadata": {"name": "a\\"b\\\\c",'
    ' "annotations": {"e\\u0301": "\\ud83d\\ude00 é 😀 \\n"}}},\r\n'
    ' 12 , -4.5e+6, true ,false,null, "x", [ ] , { } ,[1,[2,{"3":[]}]] ] ,\n'
    ' "metadata": {"resourceVersion": "41", "continue": "tok\\/en"}, "apiVersion":"v1" }\n'
).encode()


def test_every_split_of_an_awkward_page_decodes_as_json_loads_does() -> None:
    want = expected(AWKWARD)
    for at in range(len(AWKWARD) + 1):
        assert decode(cut(AWKWARD, at)) == want, at
    assert decode([AWKWARD[i : i + 1] for i in range(len(AWKWARD))]) == want
    assert decode(cut(AWKWARD, 5, 40, 41, 42, 90, 91)) == want


@pytest.mark.parametrize(
    "text",
    [
        '{"metadata": {"continue": "c", "resourceVersion": "1"}, "items": [{"a": 1}, 2]}',
        '{"items": [{"a": 1}, 2], "metadata": {"continue": "c", "resourceVersion": "1"}}',
        '{"items": [], "metadata": {}}',
        '{"items": null}',
        '{"metadata": {"resourceVersion": "3"}}',
        "{}",
        ' \n{"items":[[]]}\r\n\t',
        '{"items": [1, 22, 333]}',
    ],
    ids=["metadata-first", "metadata-last", "empty", "null", "no-items", "nothing", "ws", "nums"],
)
def test_fields_in_any_order_and_empty_pages(text: str) -> None:
    data = text.encode()
    for at in range(len(data) + 1):
        assert decode(cut(data, at)) == expected(data), at


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "not an object list"),
        ('"items"', "not an object list"),
        ('{"items": {}}', "items is not an array"),
        ('{"items": 3}', "items is not an array"),
        ('{"items": [1,]}', "the page is not JSON"),
        ('{"items": [1 2]}', "the page is not JSON"),
        # Text follows each mistake: one in the last few characters is told as a page cut short.
        ('{"items": [{"a" 1}], "metadata": {"continue": ""}}', "the page is not JSON"),
        ('{"items": [tru], "metadata": {"continue": ""}}', "the page is not JSON"),
        ('{"items": [NaN]}', "the page is not JSON"),
        ('{"items": [-Infinity]}', "the page is not JSON"),
        ('{"items": [' + "9" * 5000 + "]}", "the page is not JSON"),
        ('{"items": [' + "[" * 100_000 + "]}", "the page is not JSON"),
        ('{"items": []}}', "the page is not JSON"),
        ('{"items": [], }', "the page is not JSON"),
        ('{1: 2, "items": []}', "the page is not JSON"),
        ('{"items" []}', "the page is not JSON"),
        ('{"items": [], "items": []}', "items twice"),
        ('{"items": [{"a": 1}', "the page ends early"),
        ('{"items": [{"a": "\\u12', "the page ends early"),
        ('{"metadata": {"a": 1}', "the page ends early"),
        ("", "the page ends early"),
    ],
)
def test_a_page_that_is_not_a_list_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(_listing.PageError) as caught:
        decode([text.encode()])
    assert str(caught.value) == message


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(_listing.PageError, match=r"^the page is not UTF-8$"):
        decode([b'{"items": ["\xff"]}'])
    # The first byte of a two-byte character, then nothing: a body cut short.
    with pytest.raises(_listing.PageError, match=r"^the page ends early$"):
        decode([b'{"items": ["\xc3'])


def item_of(chars: int) -> bytes:
    """One object whose JSON text is exactly ``chars`` characters."""
    return json.dumps({"p": "x" * (chars - 9)}).encode()


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 30], ids=["tiny", "4k", "whole"])
def test_one_object_longer_than_the_bound_is_refused(chunk: int) -> None:
    limit = 10_000
    assert len(item_of(limit)) == limit
    fits = b'{"items": [' + item_of(limit) + b"]}"
    assert len(decode(cut(fits, *range(chunk, len(fits), chunk)), limit)[0]) == 1
    seen: list[Any] = []
    decoder = _listing.PageDecoder(limit, seen.append)
    over = b'{"items": [{"a": 1}, ' + item_of(limit + 1) + b"]}"
    with pytest.raises(_listing.PageError, match=r"^an object longer than 10000 bytes$"):
        for at in range(0, len(over), chunk):
            decoder.feed(over[at : at + chunk])
        decoder.finish()
    assert seen == [{"a": 1}]


def test_an_unending_object_is_refused_at_the_bound_not_at_the_end() -> None:
    decoder = _listing.PageDecoder(10_000, lambda item: None)
    decoder.feed(b'{"items": [{"p": "')
    with pytest.raises(_listing.PageError, match=r"^an object longer than 10000 bytes$"):
        for _ in range(1000):  # 64 MB if nothing stopped it
            decoder.feed(b"x" * 64_000)


def test_the_fields_beside_items_are_bounded_together() -> None:
    fields = ", ".join(f'"f{i}": "{"x" * 100}"' for i in range(200))
    with pytest.raises(
        _listing.PageError, match=r"^the fields beside items longer than 10000 bytes$"
    ):
        decode([f'{{{fields}, "items": []}}'.encode()], limit=10_000)


def test_an_object_in_many_small_chunks_is_decoded_a_few_times_not_once_a_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Retrying the decoder on each 16-byte chunk of 256 KiB would be 16,384 attempts, each over
    # the text so far: 2 GB of decoding for one object. Retried when the text has doubled, it
    # is a handful.
    attempts = 0
    raw_decode = _listing._DECODER.raw_decode

    def counting(text: str, start: int) -> tuple[Any, int]:
        nonlocal attempts
        attempts += 1
        return raw_decode(text, start)

    monkeypatch.setattr(_listing._DECODER, "raw_decode", counting)
    data = b'{"items": [' + item_of(256 * 1024) + b"]}"
    items, _ = decode(cut(data, *range(16, len(data), 16)))
    assert len(items) == 1
    assert attempts < 25


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    fields: dict[str, Any] = {
        "kind": "NodeList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": draw(st.text()), "continue": draw(st.text())},
        **draw(
            st.dictionaries(
                st.text(max_size=6).filter(lambda k: k != "items"), json_values, max_size=3
            )
        ),
    }
    items = draw(st.lists(json_values, max_size=6))
    order = draw(st.permutations([*fields, "items"]))
    page = {key: items if key == "items" else fields[key] for key in order}
    text = json.dumps(
        page,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([(",", ":"), (" , ", "\t:\n"), (",\r\n", " : ")])),
    )
    return text.encode()


@settings(deadline=None, max_examples=150)
@given(st.data())
def test_any_page_split_anywhere_decodes_as_json_loads_does(data: st.DataObject) -> None:
    page = data.draw(pages())
    at = data.draw(st.lists(st.integers(0, len(page)), max_size=12))
    assert decode(cut(page, *at)) == expected(page)


@settings(deadline=None, max_examples=60)
@given(st.data())
def test_any_page_cut_short_ends_early(data: st.DataObject) -> None:
    page = data.draw(pages())
    end = data.draw(st.integers(0, len(page.rstrip()) - 1))
    with pytest.raises(_listing.PageError, match=r"^the page ends early$"):
        decode(cut(page[:end], *data.draw(st.lists(st.integers(0, end), max_size=4))))


def pod(i: int) -> dict[str, Any]:
    """About 1 MiB, as the issue's Pending pods: many annotations rather than one long string,
    so the decoded object weighs more than its text."""
    annotations = {f"example.com/note-{k}": f"{k:04d}" * 256 for k in range(1000)}
    return {"metadata": {"name": f"pod-{i}", "annotations": annotations}}


def page_chunks(count: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """A page of ``count`` pods, produced a chunk at a time: the whole page never exists."""
    yield b'{"kind":"PodList","apiVersion":"v1","items":['
    for i in range(count):
        text = (b"," if i else b"") + json.dumps(pod(i)).encode()
        for at in range(0, len(text), chunk):
            yield text[at : at + chunk]
    yield b'],"metadata":{"resourceVersion":"77"}}'


def peak_while(run: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_a_page_of_forty_1mib_pods_holds_about_one() -> None:
    assert 1.0 * MiB < len(json.dumps(pod(0))) < 1.1 * MiB
    names: list[str] = []
    decoder = _listing.PageDecoder(4 * MiB, lambda item: names.append(item["metadata"]["name"]))

    def run() -> None:
        for chunk in page_chunks(40):
            decoder.feed(chunk)
        decoder.finish()

    _, peak = peak_while(run)
    assert names == [f"pod-{i}" for i in range(40)]
    assert decoder.fields["metadata"] == {"resourceVersion": "77"}
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB"


class Seen:
    def __init__(self) -> None:
        self.objects: list[str] = []
        self.listed: list[set[str]] = []

    def watch(self, connection: kube.Connection) -> kube.Watch:
        return kube.Watch(
            connection,
            "/api/v1/nodes",
            on_object=lambda body: self.objects.append(body["metadata"]["name"]),
            on_deleted=lambda body: None,
            on_listed=self.listed.append,
        )


async def test_listing_pages_streamed_in_small_chunks() -> None:
    first = b'{"metadata": {"continue": "next", "resourceVersion": ""}, "items": [{"metadata": {"name": "a"}}, 3]}'  # noqa: E501
    second = b'{"items": [{"metadata": {"name": "b", "namespace": "n"}}], "metadata": {"resourceVersion": "9"}}'  # noqa: E501
    api = FakeApi(
        lists=[lambda: cut(first, *range(7, len(first), 7)), lambda: cut(second, 50)], watches=[]
    )
    seen = Seen()
    async with serving(api) as connection, aiohttp.ClientSession() as session:
        watch = seen.watch(connection)
        assert await watch._list(session) == "9"
    assert seen.objects == ["a", "b"]
    assert seen.listed == [{"a", "n/b"}]
    assert watch.lists == 1 and watch.synced.is_set()
    assert [r.get("continue") for r in api.requests] == [None, "next"]


async def test_a_page_with_an_oversized_object_fails_the_list_in_one_line() -> None:
    body = b'{"items": [{"metadata": {"name": "a"}}, ' + item_of(2000) + b"]}"
    api = FakeApi(lists=[body], watches=[])
    seen = Seen()
    async with serving(api) as connection, aiohttp.ClientSession() as session:
        watch = seen.watch(connection)
        watch.max_object_bytes = 1000
        with pytest.raises(kube.WatchError) as caught:
            await watch._list(session)
    assert str(caught.value) == "list: an object longer than 1000 bytes"
    assert seen.listed == [] and watch.lists == 0 and not watch.synced.is_set()


async def test_listing_forty_1mib_pods_holds_about_one_not_the_page() -> None:
    # Decoded whole (response.json()), this page peaked at about 120 MiB: the body, its text
    # and its objects at once.
    api = FakeApi(lists=[lambda: page_chunks(40)], watches=[])
    seen = Seen()
    async with serving(api) as connection, aiohttp.ClientSession() as session:
        watch = seen.watch(connection)
        tracemalloc.start()
        try:
            version = await watch._list(session)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert version == "77"
    assert seen.objects == [f"pod-{i}" for i in range(40)]
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB"
