"""Resource globs: does a pattern match a string, and does one pattern cover another?

Resource patterns are globs: `*` matches a run of characters other than `/`, `**` matches any
run, `?` one character other than `/`, everything else is literal. A task's own resources are
patterns too, so "covered" means *language inclusion*: `repo:acme/*` covers the task resource
`repo:acme/w*` but not `repo:acme/**`, even though the string "repo:acme/**" matches
`repo:acme/*` character by character. Matching runs on a small NFA, never on a backtracking
regex, so hostile patterns cannot cause catastrophic backtracking.

Called by the operator's policy evaluation (does a rule cover a task's resource) and delegation
narrowing (does the parent's resource cover the child's), and by ``Claims.allows``
(`glob_match`). Pure: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

_OTHER = ""  # stands for every non-'/' character that is not a literal of either pattern
_MAX_COVER_STEPS = 20_000  # real patterns need a few hundred; this bounds hostile ones


@dataclass(frozen=True)
class _Glob:
    """A glob as a bit-parallel NFA: state i means "tokens before i are matched"; bit `size` is
    the accepting state. Adjacent stars are merged when compiling, so an epsilon closure is a
    single shift."""

    size: int
    literals: Mapping[str, int]  # character -> bits of the literal tokens equal to it
    one: int  # bits of '?' tokens
    star: int  # bits of '*' tokens
    any: int  # bits of '**' tokens

    def close(self, states: int) -> int:
        return states | ((states & (self.star | self.any)) << 1)

    def advance(self, states: int, char: str) -> int:
        if char == "/":
            move, loop = self.literals.get(char, 0), self.any
        else:
            move, loop = self.literals.get(char, 0) | self.one, self.star | self.any
        return self.close(((states & move) << 1) | (states & loop))

    def accepts(self, states: int) -> bool:
        return bool(states >> self.size & 1)


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> _Glob:
    kinds: list[str] = []  # "*", "**", "?" or a literal character
    i = 0
    while i < len(pattern):
        if pattern.startswith("*", i):
            kind = "**" if pattern.startswith("**", i) else "*"
            i += len(kind)
            if kinds and kinds[-1] in ("*", "**"):  # "***" and "*" next to "**" mean "**"
                kind = "**" if "**" in (kind, kinds.pop()) else "*"
            kinds.append(kind)
        else:
            kinds.append(pattern[i])
            i += 1
    literals: dict[str, int] = {}
    for index, kind in enumerate(kinds):
        if kind not in ("*", "**", "?"):
            literals[kind] = literals.get(kind, 0) | 1 << index

    def bits(wanted: str) -> int:
        return sum(1 << index for index, kind in enumerate(kinds) if kind == wanted)

    return _Glob(len(kinds), literals, bits("?"), bits("*"), bits("**"))


def glob_match(pattern: str, value: str) -> bool:
    """True if the string `value` matches the glob `pattern` (see the module docstring)."""
    glob = _compile(pattern)
    states = glob.close(1)
    for char in value:
        states = glob.advance(states, char)
        if not states:
            return False
    return glob.accepts(states)


@lru_cache(maxsize=8192)
def glob_covers(outer: str, inner: str) -> bool:
    """True if every string the glob `inner` matches is matched by the glob `outer`.

    For an `inner` without wildcards this is `glob_match(outer, inner)`. Otherwise it explores
    the product of both pattern automata, determinised, over a finite alphabet (the literals of
    both patterns, '/', and one symbol for "any other character"), looking for a string `inner`
    accepts and `outer` rejects. Past a fixed budget the answer is False: not covered is the
    safe side.
    """
    if inner == outer:
        return True
    if not any(char in "*?" for char in inner):
        return glob_match(outer, inner)
    a, b = _compile(inner), _compile(outer)
    alphabet = sorted({*a.literals, *b.literals, "/", _OTHER})
    start = (a.close(1), b.close(1))
    stack, seen = [start], {start}
    steps = 0
    while stack:
        inner_states, outer_states = stack.pop()
        if a.accepts(inner_states) and not b.accepts(outer_states):
            return False
        for char in alphabet:
            steps += 1
            if steps > _MAX_COVER_STEPS:
                return False
            pair = (a.advance(inner_states, char), b.advance(outer_states, char))
            if pair[0] and pair not in seen:
                seen.add(pair)
                stack.append(pair)
    return True
