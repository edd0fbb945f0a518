"""Scope requirements as boolean expressions over scope names.

``ScopeRequirement.parse("(ads_read OR ads_management) AND business_management")`` builds a
requirement; :meth:`ScopeRequirement.check` evaluates it against the scopes a credential was
granted and reports exactly which top-level terms are missing, in the words of the
expression (``"ads_read OR ads_management"``), so an operator knows what to re-request.

Grammar (``AND`` binds tighter than ``OR``; keywords are case-insensitive)::

    expr   := term ("OR" term)*
    term   := factor ("AND" factor)*
    factor := SCOPE | "(" expr ")"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["ScopeCheck", "ScopeRequirement", "sanitize_scopes"]

_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9_.:/\-]+))")


@dataclass(frozen=True)
class _Scope:
    name: str

    def satisfied(self, granted: frozenset[str]) -> bool:
        return self.name in granted

    def render(self, parent: str | None = None) -> str:
        return self.name


@dataclass(frozen=True)
class _Op:
    op: str  # "AND" | "OR"
    parts: tuple[_Node, ...]

    def satisfied(self, granted: frozenset[str]) -> bool:
        results = (p.satisfied(granted) for p in self.parts)
        return all(results) if self.op == "AND" else any(results)

    def render(self, parent: str | None = None) -> str:
        text = f" {self.op} ".join(p.render(self.op) for p in self.parts)
        return f"({text})" if parent is not None and parent != self.op else text


_Node = _Scope | _Op


@dataclass(frozen=True)
class ScopeCheck:
    """The outcome of checking granted scopes against a requirement."""

    satisfied: bool
    missing: tuple[str, ...]


class ScopeRequirement:
    """A parsed scope expression."""

    def __init__(self, root: _Node, source: str) -> None:
        self._root = root
        self.source = source

    @classmethod
    def parse(cls, expression: str) -> ScopeRequirement:
        tokens = _tokenize(expression)
        root, pos = _parse_expr(tokens, 0, expression)
        if pos != len(tokens):
            raise ValueError(f"unexpected {tokens[pos]!r} in scope expression {expression!r}")
        return cls(root, expression)

    @classmethod
    def all_of(cls, scopes: Iterable[str]) -> ScopeRequirement:
        names = sorted(set(scopes))
        if not names:
            raise ValueError("all_of() needs at least one scope")
        return cls.parse(" AND ".join(names))

    def scopes(self) -> frozenset[str]:
        """Every scope name the expression mentions."""
        found: set[str] = set()
        stack: list[_Node] = [self._root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Scope):
                found.add(node.name)
            else:
                stack.extend(node.parts)
        return frozenset(found)

    def check(self, granted: Iterable[str]) -> ScopeCheck:
        """Evaluate against ``granted``; ``missing`` lists the unsatisfied top-level terms."""
        have = frozenset(s.strip().lower() for s in _names(granted, "granted"))
        root = self._root
        terms = root.parts if isinstance(root, _Op) and root.op == "AND" else (root,)
        missing = tuple(t.render() for t in terms if not t.satisfied(have))
        return ScopeCheck(satisfied=not missing, missing=missing)

    def and_(self, other: ScopeRequirement) -> ScopeRequirement:
        """This requirement AND another (used by organisation scope policies)."""
        return ScopeRequirement.parse(f"({self.source}) AND ({other.source})")

    def __str__(self) -> str:
        return self._root.render()

    def __repr__(self) -> str:
        return f"ScopeRequirement({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScopeRequirement) and self._root == other._root

    def __hash__(self) -> int:
        return hash(self._root)


def _tokenize(expression: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot parse scope expression {expression!r} at {text[pos:]!r}")
        tokens.append(match.group(match.lastindex or 0))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not tokens:
        raise ValueError("empty scope expression")
    return tokens


def _parse_expr(tokens: list[str], pos: int, source: str) -> tuple[_Node, int]:
    return _parse_binary(tokens, pos, source, "OR", _parse_term)


def _parse_term(tokens: list[str], pos: int, source: str) -> tuple[_Node, int]:
    return _parse_binary(tokens, pos, source, "AND", _parse_factor)


_Parser = Callable[[list[str], int, str], tuple[_Node, int]]


def _parse_binary(
    tokens: list[str], pos: int, source: str, op: str, parse_operand: _Parser
) -> tuple[_Node, int]:
    node, pos = parse_operand(tokens, pos, source)
    parts = [node]
    while pos < len(tokens) and tokens[pos].upper() == op:
        node, pos = parse_operand(tokens, pos + 1, source)
        parts.append(node)
    if len(parts) == 1:
        return parts[0], pos
    flat: list[_Node] = []
    for part in parts:  # (a AND b) AND c == a AND b AND c
        flat.extend(part.parts if isinstance(part, _Op) and part.op == op else (part,))
    return _Op(op, tuple(flat)), pos


def _parse_factor(tokens: list[str], pos: int, source: str) -> tuple[_Node, int]:
    if pos >= len(tokens):
        raise ValueError(f"scope expression {source!r} ends too early")
    word = tokens[pos]
    if word == "(":
        node, pos = _parse_expr(tokens, pos + 1, source)
        if pos >= len(tokens) or tokens[pos] != ")":
            raise ValueError(f"missing ')' in scope expression {source!r}")
        return node, pos + 1
    if word == ")" or word.upper() in ("AND", "OR"):
        raise ValueError(f"unexpected {word!r} in scope expression {source!r}")
    return _Scope(word.lower()), pos + 1


def _names(scopes: Iterable[str], what: str) -> Iterable[str]:
    # A str is an Iterable[str] of characters: "ads_read" would silently become 8 scopes.
    if isinstance(scopes, str | bytes):
        raise TypeError(
            f"{what} must be an iterable of scope names, not a single string (split {scopes!r} first)"
        )
    return scopes


def sanitize_scopes(
    scopes: Iterable[str], *, ignore: Iterable[str] = (), ignore_prefixes: Iterable[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Trim, lowercase and de-duplicate scopes (keeping order); drop ignored ones.

    Returns ``(kept, ignored)``; both are de-duplicated, ``ignored`` is sorted.
    """
    drop = {s.strip().lower() for s in _names(ignore, "ignore")}
    prefixes = tuple(p.strip().lower() for p in _names(ignore_prefixes, "ignore_prefixes") if p.strip())
    kept: list[str] = []
    ignored: set[str] = set()
    for raw in _names(scopes, "scopes"):
        scope = raw.strip().lower()
        if not scope:
            continue
        if scope in drop or scope.startswith(prefixes):
            ignored.add(scope)
        elif scope not in kept:
            kept.append(scope)
    return tuple(kept), tuple(sorted(ignored))
