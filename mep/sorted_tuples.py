"""Sorted tuples edited without sorting again: what keeps a rule change O(changed rules).

The store's snapshot keeps its rules in rule-id order and the compiler its
compiled rules in match order, both as immutable tuples that consumers share.
``edited`` derives the next tuple from the previous one: a binary search per
changed item, then one copy of the unchanged runs (C speed, about 0.1 ms for
10,000 items), instead of sorting every item in Python.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any, TypeVar

__all__ = ["edited"]

T = TypeVar("T")


def edited(items: tuple[T, ...], key: Callable[[T], Any], drop: Iterable[Any], add: Iterable[T]) -> tuple[T, ...]:
    """``items`` (sorted by ``key``, keys unique) without the items whose key is in ``drop``, with ``add`` in order.

    An added item replaces the item of the same key, so ``drop`` may name it
    too. Keys must be totally ordered; ``add`` must not repeat a key.
    """
    edits: dict[Any, T | None] = dict.fromkeys(drop)
    edits.update((key(item), item) for item in add)
    if not edits:
        return items
    runs: list[tuple[T, ...]] = []
    start = 0
    for k in sorted(edits):
        at = bisect_left(items, k, lo=start, key=key)
        runs.append(items[start:at])
        item = edits[k]
        if item is not None:
            runs.append((item,))
        start = at + 1 if at < len(items) and key(items[at]) == k else at
    runs.append(items[start:])
    return tuple(chain.from_iterable(runs))
