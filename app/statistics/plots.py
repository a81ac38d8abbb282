"""Dashboard plots, rendered on the server as inline SVG (matplotlib, Agg), from the dashboard's numbers."""

from __future__ import annotations

import io
from typing import Any

_COLOURS = ("#5b6b7f", "#2f80c1", "#d9822b", "#3a9d5d", "#9b59b6", "#c0392b")


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prologue: the SVG is inlined in HTML


def _figure(width: float = 5.0, height: float = 2.6):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # a Figure without pyplot keeps no global state between requests

    figure = Figure(figsize=(width, height), dpi=96)
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def conditions_svg(conditions: list[dict[str, Any]]) -> str | None:
    """Accuracy, sensitivity and specificity per condition, grouped bars."""
    measures = [("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity")]
    if not any(condition.get("accuracy") is not None for condition in conditions):
        return None
    figure, axes = _figure()
    width = 0.8 / len(conditions)
    for index, condition in enumerate(conditions):
        values = [condition.get(key) or 0.0 for key, _ in measures]
        positions = [m + (index - (len(conditions) - 1) / 2) * width for m in range(len(measures))]
        axes.bar(positions, values, width * 0.95, label=condition.get("label") or condition["key"],
                 color=_COLOURS[index % len(_COLOURS)])
    axes.set_xticks(range(len(measures)), [label for _, label in measures])
    axes.set_ylim(0, 1)
    axes.legend(frameon=False, fontsize=8, loc="lower right")
    return _svg(figure)


def time_course_svg(points: list[dict[str, Any]]) -> str | None:
    """Mean seconds per case by position in the queue."""
    if len(points) < 2:
        return None
    figure, axes = _figure()
    axes.plot([p["order"] for p in points], [p["mean_seconds"] for p in points], marker="o", markersize=3,
              color=_COLOURS[1])
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("Position in the reader's queue")
    axes.set_ylabel("Mean seconds per case")
    axes.set_ylim(bottom=0)
    return _svg(figure)


def _spread(item: dict[str, Any] | None, bound: str, sign: int) -> float:
    """Length of one error bar; none where the interval is undefined (a single rating)."""
    return 0.0 if item is None or item[bound] is None else max(0.0, sign * (item[bound] - item["mean"]))


def ratings_svg(by_method: list[dict[str, Any]], questions: list[tuple[str, str]]) -> str | None:
    """Mean Likert rating per method and question with its bootstrap 95% interval."""
    if not by_method:
        return None
    methods = sorted({item["method"] for item in by_method})
    figure, axes = _figure(height=2.2 + 0.25 * len(methods))
    width = 0.8 / len(questions)
    for index, (key, label) in enumerate(questions):
        items = {item["method"]: item for item in by_method if item["question"] == key}
        positions = [m + (index - (len(questions) - 1) / 2) * width for m in range(len(methods))]
        means = [items[m]["mean"] if m in items else 0 for m in methods]
        errors = [[_spread(items.get(m), "ci_low", -1) for m in methods],
                  [_spread(items.get(m), "ci_high", 1) for m in methods]]
        axes.barh(positions, means, width * 0.95, xerr=errors, label=label, color=_COLOURS[index % len(_COLOURS)],
                  error_kw={"elinewidth": 1, "capsize": 2})
    axes.set_yticks(range(len(methods)), methods)
    axes.set_xlim(1, 5)
    axes.set_xlabel("Mean rating (1 strongly disagree - 5 strongly agree), 95% bootstrap CI")
    axes.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1)
    return _svg(figure)
