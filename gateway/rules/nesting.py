"""What composites are built on: the order to bind rules in, and the checks of their nesting.

A composite names other rules (`of`, `confirmed_by`, `alone_unless`, `relays`); its instances are
wired to theirs, so those must be bound first, wherever the composite stands in the file or pack
(rules/binding.py binds in `build_order`). A cycle (a names b, b names a) can never be bound, and a
chain of composites nested deeper than `MAX_NESTING` is refused too: each level is one more step of
an alarm's change going up, and a chain of hundreds was a config mistake, not a site's logic.
Everything here is iterative: a chain of any length in a config must not exhaust Python's stack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from citynerve.gateway.rules.kinds import CompositeRule, RuleConfig

__all__ = ["MAX_NESTING", "REFERENCE_KEYS", "build_order", "nesting_problems", "references"]

MAX_NESTING = 16
"""Composites on composites: at most this many levels (the shipped packs use 3)."""

REFERENCE_KEYS = ("of", "confirmed_by", "alone_unless", "relays")
"""The keys of a composite that name other rules."""


def references(rule: RuleConfig) -> Iterator[tuple[str, str]]:
    """(key, rule id) of every rule a composite names; nothing for other rules."""
    if isinstance(rule, CompositeRule):
        for key in REFERENCE_KEYS:
            for ref in getattr(rule, key):
                yield key, ref


def _walk(rules: Sequence[RuleConfig]) -> tuple[list[RuleConfig], list[list[tuple[str, str]]]]:
    """Depth-first over the references, roots in the given order: the rules in post-order (each
    after the rules it names) and the cycles met, each as (key, rule id) steps from its first rule."""
    by_id = {r.id: r for r in rules}
    done: set[str] = set()
    order: list[RuleConfig] = []
    cycles: list[list[tuple[str, str]]] = []
    for root in rules:
        if root.id in done:
            continue
        path: list[tuple[str, str]] = [("", root.id)]  # (key it was reached by, rule id)
        stack = [references(root)]
        on_path = {root.id}
        while stack:
            for key, ref in stack[-1]:
                child = by_id.get(ref)
                if child is None or ref in done or ref == path[-1][1]:
                    continue  # unknown, bound already, or itself: reported by RulesConfig
                if ref in on_path:
                    start = next(i for i, (_, rid) in enumerate(path) if rid == ref)
                    cycles.append([*path[start:], (key, ref)])
                    continue
                path.append((key, ref))
                on_path.add(ref)
                stack.append(references(child))
                break
            else:
                stack.pop()
                _, rid = path.pop()
                on_path.discard(rid)
                done.add(rid)
                order.append(by_id[rid])
    return order, cycles


def build_order(rules: Sequence[RuleConfig]) -> list[RuleConfig]:
    """The rules, each after every rule it names, else in the given order: rules already in that
    order keep it. Unknown ids and cycles are passed over (RulesConfig refuses them)."""
    return _walk(rules)[0]


def _chain(steps: Sequence[tuple[str, str]]) -> str:
    """`a --of--> b --of--> a`; a long chain with its middle left out."""
    text = [steps[0][1], *(f"--{key}--> {rid}" for key, rid in steps[1:])]
    if len(text) > 8:
        text = [*text[:4], "...", *text[-3:]]
    return " ".join(text)


def nesting_problems(rules: Sequence[RuleConfig]) -> list[str]:
    """Cycles between composites and composites nested deeper than MAX_NESTING, each naming the
    rule ids and the keys that join them."""
    order, cycles = _walk(rules)
    problems = [f"composites name each other in a cycle: {_chain(c)}" for c in cycles]
    # Levels of composites under each rule, and the rule below it on its deepest chain.
    depth: dict[str, int] = {}
    below: dict[str, tuple[str, str] | None] = {}
    known = {r.id for r in rules}
    for rule in order:  # children first
        if not isinstance(rule, CompositeRule):
            depth[rule.id], below[rule.id] = 0, None
            continue
        refs = [(k, c) for k, c in references(rule) if c in known and c != rule.id and c in depth]
        deepest = max(refs, key=lambda kc: depth[kc[1]], default=None)
        depth[rule.id] = 1 + (depth[deepest[1]] if deepest else 0)
        below[rule.id] = deepest
    too_deep = [r.id for r in order if depth.get(r.id, 0) > MAX_NESTING]
    if too_deep:
        top = max(too_deep, key=lambda rid: depth[rid])
        steps: list[tuple[str, str]] = [("", top)]
        while (step := below[steps[-1][1]]) is not None:
            steps.append(step)
        more = ", ..." if len(too_deep) > 5 else ""
        problems.append(
            f"composites nested {depth[top]} deep, at most {MAX_NESTING}: {_chain(steps)}; "
            f"too deep: {', '.join(too_deep[:5])}{more} ({len(too_deep)} rules)"
        )
    return problems
