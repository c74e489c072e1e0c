"""The classifier's block pool (maps/classifier.py _Pool): shared blocks, reused indexes, no leak.

Pure Python: the pool decides which block of mep_vec_blocks each vector
names; tests/dataplane/ runs the tables it lays out through the XDP program."""
from __future__ import annotations

from mep.dataplane.maps.classifier import _BLOCK_BYTES, _Pool, _encode
from mep.dataplane.tables import MAX_KEY_PAIRS


def block(n: int) -> bytes:
    return n.to_bytes(_BLOCK_BYTES, "little")


def check(pool: _Pool, vectors: list[tuple[bytes, ...]], capacity: int) -> None:
    """Every block a vector names has one index; every other index is free."""
    named = {b for v in vectors for b in v}
    assert set(pool.ids) == named == set(pool.refs)
    assert sorted([*pool.ids.values(), *pool.free]) == list(range(capacity))
    assert all(pool.refs[b] == sum(v.count(b) for v in vectors) for b in named)


def test_a_vector_is_its_blocks_in_use_then_a_block_per_summary() -> None:
    # 20 words: three blocks of 8; a key summary and one pair summary given, the other pair slots zero
    encoded = _encode(((1 << 1279) | 5, (0b101, 1 << 3)), nwords=20)
    assert len(encoded) == 3 + 1 + MAX_KEY_PAIRS
    assert encoded[0] == block(5) and encoded[1] == block(0) and encoded[2] == block(1 << (1279 - 1024))
    assert encoded[3:5] == (block(0b101), block(1 << 3)) and set(encoded[5:]) == {block(0)}


def test_identical_blocks_share_an_index_and_a_rewrite_keeps_the_ones_still_named() -> None:
    a, b, c, d = (block(n) for n in (1, 2, 3, 4))
    first = [(a, b, a), (a, c, b)]
    pool, written = _Pool.of(first, capacity=8, old=None)
    check(pool, first, 8)
    assert sorted(written.values()) == [a, b, c]  # each distinct block written once
    second = [(a, d, a), (d, c, d)]
    again, rewritten = _Pool.of(second, capacity=8, old=pool)
    check(again, second, 8)
    assert again.ids[a] == pool.ids[a] and again.ids[c] == pool.ids[c]  # kept where they were: not rewritten
    assert list(rewritten.values()) == [d]


def test_replacing_vectors_frees_what_nothing_names_and_reuses_it() -> None:
    a, b, c = block(1), block(2), block(3)
    vectors = [(a, b), (a, a)]
    pool, _ = _Pool.of(vectors, capacity=3, old=None)
    for step in range(50):  # as the ENABLED vector flips between two contents: a full pool never leaks
        old, new = vectors[0], ((a, c) if step % 2 == 0 else (a, b))
        written = pool.replace(old, new)
        vectors[0] = new
        check(pool, vectors, 3)
        assert list(written.values()) == [new[1]]  # the block no vector named before, at a free index
