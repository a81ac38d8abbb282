"""Assignment schemes for reader studies: which reader reads which case, under which condition, in which order.

Pure functions (numpy + stdlib): the reader-study service turns the planned reads into `assignments` rows.

Randomness: every reader has a numpy Generator of their own, seeded from ``(seed, reader)``, so the same
seed gives the same plan and adding readers leaves the plans of the existing readers unchanged. Cases are
split into condition blocks by one study-level Generator, seeded from ``seed`` alone (not from the number
of readers). NumPy does not promise identical streams across its releases, so a plan is stored once made,
not regenerated later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

# SeedSequence([s]) == SeedSequence([s, 0]) (trailing zeros do not change the hash), so each stream gets a tag.
_BLOCKS_STREAM = 2
_READER_STREAM = 1


class Scheme(StrEnum):
    counterbalanced = "counterbalanced"  # each case read once per reader, under one condition; Sayres et al. 2019
    crossed = "crossed"  # each reader reads each case under every condition, one session per condition
    sequential = "sequential"  # each case read unaided, then straight away aided, by the same reader


@dataclass(frozen=True)
class PlannedRead:
    reader: int
    case: int
    condition: str
    session: int  # 1-based; crossed: one session per condition, separated by the washout; otherwise 1
    order: int  # 0-based position in the reader's queue over all sessions, unique per reader
    step: int = 0  # sequential: 0 = unaided, 1 = aided (right after the unaided read of the same case)


def plan(*, scheme: Scheme, readers: int, cases: int, conditions: Sequence[str], seed: int) -> list[PlannedRead]:
    """Plan every read of a study; sorted by reader, then order."""
    scheme = Scheme(scheme)
    keys = list(conditions)
    _validate(scheme=scheme, readers=readers, cases=cases, conditions=keys, seed=seed)
    if scheme is Scheme.sequential:
        return [read for r in range(readers) for read in _sequential(r, cases, keys, seed)]
    block = _case_blocks(cases, len(keys), seed)
    plan_reader = _counterbalanced if scheme is Scheme.counterbalanced else _crossed
    return [read for r in range(readers) for read in plan_reader(r, block, keys, seed)]


def balance(planned: Sequence[PlannedRead]) -> dict[str, dict[int, dict[str, int]]]:
    """Counts of reads per reader per condition and per case per condition (zeros included)."""
    conditions = list(dict.fromkeys(read.condition for read in planned))
    by_reader = Counter((read.reader, read.condition) for read in planned)
    by_case = Counter((read.case, read.condition) for read in planned)
    return {
        "reader_condition": {
            r: {c: by_reader[r, c] for c in conditions} for r in sorted({read.reader for read in planned})
        },
        "case_condition": {i: {c: by_case[i, c] for c in conditions} for i in sorted({read.case for read in planned})},
    }


def _validate(*, scheme: Scheme, readers: int, cases: int, conditions: list[str], seed: int) -> None:
    if readers < 1:
        raise ValueError(f"a reader study needs at least one reader, got readers={readers}")
    if cases < 1:
        raise ValueError(f"a reader study needs at least one case, got cases={cases}")
    if seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got seed={seed}")
    if not conditions:
        raise ValueError("a reader study needs at least one condition")
    if not all(isinstance(c, str) and c for c in conditions):
        raise ValueError(f"conditions must be non-empty strings, got {conditions}")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"conditions must be unique, got {conditions}")
    if scheme is Scheme.sequential and len(conditions) != 2:
        raise ValueError(f"the sequential scheme needs exactly 2 conditions (unaided, aided), got {conditions}")
    if scheme is Scheme.counterbalanced and len(conditions) > cases:
        raise ValueError(
            f"the counterbalanced scheme needs at least as many cases as conditions, "
            f"got {cases} cases and {len(conditions)} conditions"
        )


def _reader_rng(seed: int, reader: int) -> np.random.Generator:
    return np.random.default_rng([seed, _READER_STREAM, reader])


def _case_blocks(cases: int, n_conditions: int, seed: int) -> np.ndarray:
    """Block index (0..C-1) of each case: a seeded permutation cut into C blocks whose sizes differ by at most 1."""
    permutation = np.random.default_rng([seed, _BLOCKS_STREAM]).permutation(cases)
    block = np.empty(cases, dtype=int)
    for b, members in enumerate(np.array_split(permutation, n_conditions)):
        block[members] = b
    return block


def _counterbalanced(reader: int, block: np.ndarray, conditions: list[str], seed: int) -> list[PlannedRead]:
    """Block b under condition (b + reader) mod C; all cases shuffled together, so conditions interleave."""
    n = len(conditions)
    queue = _reader_rng(seed, reader).permutation(len(block))
    return [
        PlannedRead(reader=reader, case=int(i), condition=conditions[(block[i] + reader) % n], session=1, order=k)
        for k, i in enumerate(queue)
    ]


def _crossed(reader: int, block: np.ndarray, conditions: list[str], seed: int) -> list[PlannedRead]:
    """Session s (0-based) reads every case, case i under condition (block_i + reader + s) mod C."""
    n, rng = len(conditions), _reader_rng(seed, reader)
    reads: list[PlannedRead] = []
    for s in range(n):
        for i in rng.permutation(len(block)):
            condition = conditions[(block[i] + reader + s) % n]
            reads.append(PlannedRead(reader=reader, case=int(i), condition=condition, session=s + 1, order=len(reads)))
    return reads


def _sequential(reader: int, cases: int, conditions: list[str], seed: int) -> list[PlannedRead]:
    """Each case unaided (step 0) then aided (step 1), cases in a seeded order."""
    return [
        PlannedRead(reader=reader, case=int(i), condition=conditions[step], session=1, order=2 * k + step, step=step)
        for k, i in enumerate(_reader_rng(seed, reader).permutation(cases))
        for step in (0, 1)
    ]
