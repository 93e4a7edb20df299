"""Redis key names are spelled only in the state package (:mod:`streamrec.state.keys` and
its Lua scripts): the string literals of every other package's code hold no key literal.

Literals are read with :mod:`ast` (comments and docstrings are prose, not code) and
checked against a few patterns: the default prefix, a key built onto a configured prefix,
a key namespace at the start of a literal, the names of the shared keys and scan
patterns. A hit fails naming ``file:line``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TypeGuard

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["streamrec/kernel", "streamrec/contracts", "streamrec/app", "streams", "serving",
            "recmodels", "infra", "benchmarks"]
NAMESPACES = r"(?:u|wm|mk|dedupe|served|model|pop|item|w)"
PATTERNS = {
    "the default prefix": re.compile(r"\bsr:"),
    "a key built onto a prefix": re.compile(r"\{[^{}]*prefix[^{}]*\}[^\"'{}\s]"),
    "a key namespace": re.compile(r"^[rRbBfFuU]*(?:\"\"\"|'''|\"|')" + NAMESPACES + ":"),
    "a shared key": re.compile(r"item:id[sx]|pop:meta|mk:total|:bought\b"
                               r"|model:(?:current|seq|versions)\b"),
    "a scan pattern": re.compile(r":\*"),
}
# (file, the line stripped): literals that are settings, not keys
ALLOWED = {
    ("streamrec/kernel/settings.py", 'prefix: str = "sr:"'),  # the configured prefix
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _literals(tree: ast.AST) -> list[ast.expr]:
    """Every string or bytes literal and f-string, an f-string's parts not apart."""
    inner = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
             for part in ast.walk(node) if part is not node}
    skip = inner | _docstrings(tree)
    return [node for node in ast.walk(tree) if _is_literal(node) and id(node) not in skip]


def _is_literal(node: ast.AST) -> TypeGuard[ast.Constant | ast.JoinedStr]:
    """A string or bytes literal, or an f-string."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str | bytes)
    return isinstance(node, ast.JoinedStr)


def _segment(lines: list[bytes], node: ast.expr) -> str:
    """The source text of ``node`` (ast offsets count UTF-8 bytes)."""
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    if first == last:
        return lines[first][node.col_offset:node.end_col_offset].decode()
    return b"\n".join([lines[first][node.col_offset:], *lines[first + 1:last],
                       lines[last][:node.end_col_offset]]).decode()


def key_literals(source: str, name: str) -> list[str]:
    """``name:line: what (literal)`` for each key literal in ``source``, in line order."""
    lines = source.encode().splitlines()
    hits = []
    for node in sorted(_literals(ast.parse(source)), key=lambda n: (n.lineno, n.col_offset)):
        if (name, lines[node.lineno - 1].decode().strip()) in ALLOWED:
            continue
        text = _segment(lines, node)
        found = [what for what, pattern in PATTERNS.items() if pattern.search(text)]
        if found:
            hits.append(f"{name}:{node.lineno}: {', '.join(found)} ({text})")
    return hits


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_no_key_literal_outside_the_state_package() -> None:
    hits = [hit for path in _sources()
            for hit in key_literals(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert not hits, "Redis keys belong in streamrec/state/keys.py:\n" + "\n".join(hits)


def test_the_scan_covers_the_packages() -> None:
    assert all((ROOT / package).is_dir() for package in PACKAGES)
    assert len(_sources()) > 50


@pytest.mark.parametrize("code", [
    'redis.get("sr:stats")',
    'key = b"sr:served:" + user',
    'redis.hget(f"{prefix}u:{user}", "seq")',
    'redis.incr(f"{self._keys.prefix}model:seq")',
    'key = "mk:" + str(row)',
    "key = f'wm:{group}:{topic}:{partition}'",
    'found = scan(match=keys.prefix + "u:*")',
    'rows = [k for k in keys if not k.endswith(b":bought")]',
    'name = "item:ids"',
])
def test_a_key_literal_is_found_with_its_line(code: str) -> None:
    assert key_literals(f"x = 1\n{code}\n", "mod.py")[0].startswith("mod.py:2: ")


@pytest.mark.parametrize("code", [
    '"""Keys such as ``sr:u:{user}`` may be named in a docstring."""',
    'def f() -> None:\n    """Or ``sr:mk:{item}`` in a function\'s."""',
    "x = 1  # or sr:item:ids in a comment",
    'url = "redis://127.0.0.1:6379/0"',
    'prefix = f"c{tag}:"',
    'topic = "events.view"',
    'log.info("model swapped version=%s", v)',
    "keys.user(user_id)",
])
def test_prose_settings_and_key_methods_are_not_key_literals(code: str) -> None:
    assert key_literals(code + "\n", "mod.py") == []
