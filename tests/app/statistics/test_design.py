"""Assignment schemes: balance, sessions, sequential pairs, reproducibility and input checks."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from app.statistics.design import PlannedRead, Scheme, balance, plan

THREE = ["unassisted", "grades", "grades_heatmap"]


def _by_reader(planned: list[PlannedRead]) -> dict[int, list[PlannedRead]]:
    queues: dict[int, list[PlannedRead]] = defaultdict(list)
    for read in planned:
        queues[read.reader].append(read)
    return {r: sorted(q, key=lambda read: read.order) for r, q in queues.items()}


@pytest.mark.parametrize("scheme", list(Scheme))
def test_orders_are_unique_and_contiguous_per_reader(scheme):
    conditions = THREE[:2] if scheme is Scheme.sequential else THREE
    planned = plan(scheme=scheme, readers=4, cases=7, conditions=conditions, seed=3)
    queues = _by_reader(planned)
    assert sorted(queues) == [0, 1, 2, 3]
    expected_length = {Scheme.counterbalanced: 7, Scheme.crossed: 21, Scheme.sequential: 14}[scheme]
    for queue in queues.values():
        assert [read.order for read in queue] == list(range(expected_length))


def test_counterbalanced_even_sizes_are_exactly_balanced():
    planned = plan(scheme=Scheme.counterbalanced, readers=6, cases=12, conditions=THREE, seed=7)
    counts = balance(planned)
    assert counts["reader_condition"] == {r: {c: 4 for c in THREE} for r in range(6)}
    assert counts["case_condition"] == {i: {c: 2 for c in THREE} for i in range(12)}
    assert Counter((read.reader, read.case) for read in planned) == {(r, i): 1 for r in range(6) for i in range(12)}
    assert {read.session for read in planned} == {1}


def test_counterbalanced_uneven_sizes_differ_by_at_most_one():
    planned = plan(scheme=Scheme.counterbalanced, readers=5, cases=40, conditions=THREE, seed=11)
    counts = balance(planned)
    for per_condition in counts["reader_condition"].values():
        assert sorted(per_condition.values()) == [13, 13, 14]
    for per_condition in counts["case_condition"].values():
        assert sorted(per_condition.values()) == [1, 2, 2]
    assert len(planned) == 5 * 40


def test_counterbalanced_interleaves_conditions_in_the_queue():
    planned = plan(scheme=Scheme.counterbalanced, readers=3, cases=30, conditions=THREE, seed=5)
    for queue in _by_reader(planned).values():
        switches = sum(a.condition != b.condition for a, b in zip(queue, queue[1:], strict=False))
        # Three blocks read one after the other would switch condition only twice.
        assert switches > 2


def test_crossed_reads_each_case_under_each_condition_once_with_mixed_sessions():
    planned = plan(scheme=Scheme.crossed, readers=4, cases=9, conditions=THREE, seed=2)
    assert Counter((read.reader, read.case, read.condition) for read in planned) == {
        (r, i, c): 1 for r in range(4) for i in range(9) for c in THREE
    }
    for r, queue in _by_reader(planned).items():
        assert [read.session for read in queue] == [1] * 9 + [2] * 9 + [3] * 9
        for s in (1, 2, 3):
            session = [read for read in queue if read.session == s]
            assert sorted(read.case for read in session) == list(range(9)), (r, s)
            assert Counter(read.condition for read in session) == {c: 3 for c in THREE}, (r, s)
    assert balance(planned)["reader_condition"] == {r: {c: 9 for c in THREE} for r in range(4)}


def test_crossed_reshuffles_cases_between_sessions():
    planned = plan(scheme=Scheme.crossed, readers=1, cases=20, conditions=THREE, seed=4)
    sessions = [[read.case for read in planned if read.session == s] for s in (1, 2, 3)]
    assert sessions[0] != sessions[1] and sessions[1] != sessions[2]


def test_sequential_reads_aided_straight_after_unaided():
    planned = plan(scheme=Scheme.sequential, readers=3, cases=8, conditions=["unassisted", "grades"], seed=9)
    for queue in _by_reader(planned).values():
        assert sorted(read.case for read in queue[::2]) == list(range(8))
        for unaided, aided in zip(queue[::2], queue[1::2], strict=True):
            assert (unaided.condition, unaided.step) == ("unassisted", 0)
            assert (aided.condition, aided.step) == ("grades", 1)
            assert aided.case == unaided.case
            assert aided.order == unaided.order + 1
    assert balance(planned)["case_condition"] == {i: {"unassisted": 3, "grades": 3} for i in range(8)}


@pytest.mark.parametrize("scheme", list(Scheme))
def test_same_seed_same_plan_other_seed_other_order(scheme):
    conditions = THREE[:2] if scheme is Scheme.sequential else THREE
    kwargs = {"scheme": scheme, "readers": 3, "cases": 15, "conditions": conditions}
    first = plan(**kwargs, seed=123)
    assert plan(**kwargs, seed=123) == first
    other = plan(**kwargs, seed=124)
    assert [(read.case, read.condition) for read in other] != [(read.case, read.condition) for read in first]


def test_readers_do_not_share_one_order():
    planned = plan(scheme=Scheme.sequential, readers=2, cases=15, conditions=THREE[:2], seed=0)
    queues = _by_reader(planned)
    assert [read.case for read in queues[0]] != [read.case for read in queues[1]]


@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize(("readers", "more"), [(3, 4), (4, 7)])
def test_adding_readers_keeps_the_existing_readers_plans(scheme, readers, more):
    # Holds whether or not C divides R: case blocks depend on the seed and the cases only, orders on (seed, reader).
    conditions = THREE[:2] if scheme is Scheme.sequential else THREE
    kwargs = {"scheme": scheme, "cases": 10, "conditions": conditions, "seed": 8}
    small = plan(**kwargs, readers=readers)
    large = plan(**kwargs, readers=more)
    assert [read for read in large if read.reader < readers] == small
    assert {read.reader for read in large} == set(range(more))


def test_adding_cases_reshuffles_blocks():
    # The honest limit: case blocks come from a permutation of all cases, so a new case list is a new plan.
    kwargs = {"scheme": Scheme.counterbalanced, "readers": 3, "conditions": THREE, "seed": 8}
    small = plan(**kwargs, cases=12)
    large = plan(**kwargs, cases=13)
    assert [(r.case, r.condition) for r in large if r.case < 12] != [(r.case, r.condition) for r in small]


def test_balance_lists_zero_counts():
    planned = plan(scheme=Scheme.counterbalanced, readers=1, cases=3, conditions=THREE, seed=1)
    counts = balance(planned)
    assert counts["reader_condition"] == {0: {c: 1 for c in THREE}}
    for per_condition in counts["case_condition"].values():
        assert sorted(per_condition.values()) == [0, 0, 1]


def test_scheme_accepts_its_string_value():
    by_string = plan(scheme="crossed", readers=2, cases=4, conditions=THREE, seed=1)
    assert by_string == plan(scheme=Scheme.crossed, readers=2, cases=4, conditions=THREE, seed=1)


def test_crossed_allows_fewer_cases_than_conditions():
    planned = plan(scheme=Scheme.crossed, readers=2, cases=2, conditions=THREE, seed=1)
    assert balance(planned)["case_condition"] == {i: {c: 2 for c in THREE} for i in range(2)}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"readers": 0}, "at least one reader"),
        ({"cases": 0}, "at least one case"),
        ({"seed": -1}, "non-negative"),
        ({"conditions": []}, "at least one condition"),
        ({"conditions": ["grades", ""]}, "non-empty strings"),
        ({"conditions": ["grades", "grades"]}, "unique"),
        ({"scheme": Scheme.sequential}, "exactly 2 conditions"),
        ({"scheme": Scheme.sequential, "conditions": ["unassisted"]}, "exactly 2 conditions"),
        ({"cases": 2}, "at least as many cases as conditions"),
        ({"scheme": "interleaved"}, "interleaved"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(overrides, message):
    kwargs = {"scheme": Scheme.counterbalanced, "readers": 3, "cases": 6, "conditions": THREE, "seed": 1}
    with pytest.raises(ValueError, match=message):
        plan(**(kwargs | overrides))
