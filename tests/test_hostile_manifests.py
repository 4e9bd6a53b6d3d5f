"""Hostile manifests and manifest directories: each ends in a clean result or one line naming the file.

Property: whatever bytes a `*.json` entry holds, or whatever it is (a directory, a FIFO, a broken link),
discovery and verification either succeed with every asset inside the manifest directory, or raise
one InputError whose message is one line and names the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.errors import InputError
from tasks.manifests import discover_manifests, verify_manifests

SOURCE = b'{"event_id": "E-1"}\n'


def _manifest(uri: str = "sources/events.jsonl") -> dict:
    return {"manifest_id": "m-1", "dataset": "tickets", "modality": "text", "partition_key": "2026-04-17",
            "schema_version": "1", "produced_at": "2026-04-17T23:00:00Z",
            "assets": [{"uri": uri, "format": "jsonl", "sha256": hashlib.sha256(SOURCE).hexdigest(), "record_count": 1}]}


HOSTILE = st.one_of(st.integers(-2**70, 2**70), st.floats(), st.booleans(), st.none(), st.text(max_size=20),
                    st.just("m-1\n"), st.just("２０２６-０４-１７"), st.just("2026-02-30"), st.just("x" * 600),
                    st.just("2026-04-17T23:00:00"), st.just("\x00"), st.just([]), st.just({}),
                    st.just("../../etc/passwd"), st.just("/etc/passwd"), st.just("s3://bucket/../x"),
                    st.just("sources/a b ü.jsonl"), st.just("sources/\nnew.jsonl"), st.just("C:\\x"))
FIELDS = ["manifest_id", "dataset", "modality", "partition_key", "schema_version", "produced_at", "assets"]
ASSET_FIELDS = ["uri", "format", "sha256", "record_count"]


@st.composite
def manifest_bytes(draw: st.DrawFn) -> bytes:
    manifest = _manifest()
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            manifest[draw(st.sampled_from(FIELDS))] = draw(HOSTILE)
        elif isinstance(manifest.get("assets"), list) and manifest["assets"] and isinstance(manifest["assets"][0], dict):
            manifest["assets"][0][draw(st.sampled_from(ASSET_FIELDS))] = draw(HOSTILE)
    text = json.dumps(manifest, indent=2, ensure_ascii=draw(st.booleans()))
    trick = draw(st.sampled_from(["none", "none", "repeat", "escape", "deep", "nan", "truncate", "bytes", "bom"]))
    if trick == "repeat":
        text = text.replace('"dataset"', '"dataset": "tickets", "dataset"', 1)
    elif trick == "escape":
        text = text.replace('"manifest_id"', '"\\u006danifest_id"', 1)
    elif trick == "deep":
        text = text[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"
    elif trick == "nan":
        text = text.replace('"record_count": 1', '"record_count": NaN')
    elif trick == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    data = text.encode("utf-8", "surrogatepass")
    if trick == "bytes":
        data = data.replace(b"tickets", b"tick\xffets", 1)
    elif trick == "bom":
        data = b"\xef\xbb\xbf" + data
    return data


def _check(root: Path) -> None:
    try:
        manifests = discover_manifests(root)
        verify_manifests(manifests, root)
    except InputError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message
        assert message.startswith(str(root))
        return
    for manifest in manifests:
        for asset in manifest.assets:
            assert (root / asset.uri).resolve().is_relative_to(root.resolve())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=manifest_bytes())
@example(data=json.dumps(_manifest()).replace('"m-1"', '"m-1\\n"').encode())
@example(data=json.dumps(_manifest("sources/a b ü.jsonl")).encode())
def test_any_manifest_bytes_end_clean_or_in_one_line(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("m")
    (root / "sources").mkdir()
    (root / "sources" / "events.jsonl").write_bytes(SOURCE)
    (root / "sources" / "a b ü.jsonl").write_bytes(SOURCE)
    (root / "odd name ü.json").write_bytes(data)
    _check(root)


def test_a_manifest_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps(_manifest()).replace('"m-1"', '"m-1\\n"'))
    with pytest.raises(InputError, match=r"manifest_id: 'm-1\\n' does not match"):
        discover_manifests(tmp_path)


def test_asset_names_with_spaces_and_non_ascii_are_legal(tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "a b ü.jsonl").write_bytes(SOURCE)
    (tmp_path / "m.json").write_text(json.dumps(_manifest("sources/a b ü.jsonl")))
    [manifest] = verify_manifests(discover_manifests(tmp_path), tmp_path)
    assert manifest.assets[0].uri == "sources/a b ü.jsonl"


@pytest.mark.timeout(60)  # a FIFO that is read blocks forever: the timeout turns that into a failure
@pytest.mark.parametrize("make", ["directory", "broken_link", "fifo", "invalid_utf8", "deep", "repeated_key",
                                  "repeated_key_spaced"])
def test_an_entry_that_is_no_manifest_is_one_line_naming_it(tmp_path: Path, make: str) -> None:
    """A directory, a broken symlink, a FIFO (never read: it would hang), bytes that are not UTF-8,
    nesting deeper than any parser should follow, a key given twice."""
    entry = tmp_path / "x.json"
    if make == "directory":
        entry.mkdir()
    elif make == "broken_link":
        entry.symlink_to(tmp_path / "nowhere.json")
    elif make == "fifo":
        os.mkfifo(entry)
    elif make == "invalid_utf8":
        entry.write_bytes(b'{"manifest_id": "\xff"}')
    elif make == "deep":
        entry.write_text("[" * 100_000 + "]" * 100_000)
    elif make == "repeated_key":
        entry.write_text('{"manifest_id": "a",\n "manifest_id": "b"}')
    else:  # a space before the colon makes no other key
        entry.write_text('{"manifest_id": "a",\n "manifest_id" : "b"}')
    with pytest.raises(InputError) as err:
        discover_manifests(tmp_path)
    expected = {"directory": "is a directory, not a regular file", "broken_link": "is a broken symbolic link",
                "fifo": "is a FIFO, not a regular file", "invalid_utf8": "not valid UTF-8",
                "deep": "nested deeper than 512 levels", "repeated_key": "appears twice in one object",
                "repeated_key_spaced": "appears twice in one object"}[make]
    assert str(err.value).startswith(str(entry)) and expected in str(err.value) and "\n" not in str(err.value)
    if make.startswith("repeated_key"):
        assert (err.value.line, err.value.field) == (2, "manifest_id")


def test_validating_many_assets_is_linear(tmp_path: Path) -> None:
    """8,000 assets: one parse, one pass over the text only when an error needs a line number."""
    (tmp_path / "sources").mkdir()
    manifest = _manifest()
    manifest["assets"] = []
    for n in range(8000):
        data = f'{{"n": {n}}}\n'.encode()
        (tmp_path / "sources" / f"{n}.jsonl").write_bytes(data)
        manifest["assets"].append({"uri": f"sources/{n}.jsonl", "format": "jsonl",
                                   "sha256": hashlib.sha256(data).hexdigest(), "record_count": 1})
    manifest["assets"][-1]["record_count"] = 2
    (tmp_path / "m.json").write_text(json.dumps(manifest, indent=1))
    with pytest.raises(InputError) as err:
        verify_manifests(discover_manifests(tmp_path), tmp_path)
    assert err.value.field == "assets[7999].record_count"
    assert err.value.line == json.dumps(manifest, indent=1).splitlines().index('   "record_count": 2') + 1


@pytest.mark.parametrize(("change", "field", "says"), [
    (lambda m: m.update(partition_key="9999-12-31"), "partition_key", "outside the partitions the factory handles"),
    (lambda m: m.update(produced_at="9999-12-31T23:00:00-05:00"), "produced_at", "outside the times"),
    (lambda m: m["assets"].append(dict(m["assets"][0])), "assets[1].uri", "is listed twice (also assets[0])"),
    (lambda m: m["assets"].append({**m["assets"][0], "uri": "sources/./events.jsonl"}), "assets[1].uri",
     "is listed twice (also assets[0])"),
])
def test_values_a_run_could_not_use_are_refused_at_the_manifest(tmp_path: Path, change, field: str, says: str) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest()
    change(manifest)
    (tmp_path / "m.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(InputError) as err:
        discover_manifests(tmp_path)
    assert err.value.field == field and says in str(err.value)
