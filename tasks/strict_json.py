"""Strict JSON, one rule for manifests and records: RFC 8259 text, no key twice in one object, no NaN,
numbers a double can hold, nesting at most MAX_DEPTH; and the line of any value in a JSON text.

Python's `json` and orjson each accept something the other refuses (duplicate keys: last wins in both,
first wins in Polars; NaN; lone surrogates; huge numbers), so the factory decides once, here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_DEPTH = 512  # deeper nesting is refused: no record or manifest of ours needs it, parsers differ beyond

_KEY_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*:', re.S)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_TOKEN = re.compile(r'[ \t\r\n]*(?:("(?:[^"\\]|\\.)*")|([{}\[\],:])|([^ \t\r\n{}\[\],:"]+))', re.S)


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key {key!r} appears twice in one object")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKeyError(key)
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} does not fit a double")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    float(value)  # OverflowError beyond a double's range, as orjson refuses it
    return value


def nesting_depth(text: str) -> int:
    """Deepest nesting of arrays and objects, strings skipped."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def might_repeat_keys(text: str) -> bool:
    """Cheap test before the slow one: no key token repeats its spelling and none is escaped."""
    keys = [token.rstrip(": \t\r\n") for token in _KEY_TOKEN.findall(text)]  # `"k":` and `"k" :` are one key
    return len(set(keys)) < len(keys) or any("\\" in k for k in keys)


def loads_strict(text: str) -> Any:
    """Parse JSON text by the factory's rule; ValueError (or a subclass) says what broke it.

    orjson first (fast, and strict about control characters, surrogates and trailing content), then the
    checks orjson does not make: depth, and keys repeated within one object however they are escaped."""
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    if might_repeat_keys(text):
        try:
            json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant,
                       parse_float=_finite_float, parse_int=_bounded_int)
        except (ValueError, OverflowError, RecursionError) as exc:
            if isinstance(exc, DuplicateKeyError):
                raise
            raise ValueError(str(exc)) from None
    return value


def value_lines(text: str) -> tuple[dict[tuple[str | int, ...], int], list[tuple[tuple[str | int, ...], int]]]:
    """For valid JSON text: the line of every value by JSON path (an object member's is its key's line),
    and (path, line) of every key repeated within its object. One pass, no recursion."""
    lines: dict[tuple[str | int, ...], int] = {(): 1}
    repeated: list[tuple[tuple[str | int, ...], int]] = []
    # frames: [path, is_object, member (key or index), keys seen]
    stack: list[list[Any]] = []
    line, pos, expect_key = 1, 0, False
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            break
        line += text.count("\n", pos, match.start(match.lastindex or 0))  # JSON tokens hold no newline
        string, punct, scalar = match.groups()
        pos = match.end()
        top = stack[-1] if stack else None
        if string is not None and top is not None and top[1] and expect_key:
            key = json.loads(string)
            if key in top[3]:
                repeated.append(((*top[0], key), line))
            top[3].add(key)
            top[2] = key
            lines[(*top[0], key)] = line
            expect_key = False
        elif punct in ("{", "["):
            path = (*top[0], top[2]) if top is not None else ()
            if top is not None and not top[1]:
                lines[path] = line
            stack.append([path, punct == "{", 0, set()])
            expect_key = punct == "{"
        elif punct in ("}", "]"):
            stack.pop()
        elif punct == ",":
            if top is not None and top[1]:
                expect_key = True
            elif top is not None:
                top[2] += 1
        elif (string is not None or scalar is not None) and top is not None and not top[1]:
            lines[(*top[0], top[2])] = line
    return lines, repeated
