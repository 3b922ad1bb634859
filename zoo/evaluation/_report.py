"""A comparison's result: the leaderboard (one row per model), printed, and written as JSON, as
parquet and as a bar chart with confidence intervals."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.core._text_table import text_table
from zoo.store._atomic import atomic_path, write_json_atomic

from ._bootstrap import CONFIDENCE, Interval

FILES = ("leaderboard.json", "leaderboard.parquet", "leaderboard.png")


@dataclass
class Row:
    """One model's figures.

    Attributes:
        label: how the comparison named it (with its settings, ``minilm-l6[truncate_dim=128]``).
        model: the loaded model's name.
        dim: the width of its rows.
        values: each metric on all items; ``intervals``: its bootstrap interval.
        items_per_second: the pace its rows were embedded at, on the machine that embedded them.
        published: the scores the catalogue lists for it, with their sources.
        provenance: how each item set was embedded (model, revision, sha256, settings).
        details: what its scoring chose (the probe's regularisation...).
    """

    label: str
    model: str
    dim: int
    values: dict[str, float]
    intervals: dict[str, Interval]
    items_per_second: float | None
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def cell(self, metric: str) -> str:
        """``0.871 [0.860, 0.882]``"""
        band = self.intervals.get(metric)
        value = f"{self.values[metric]:.3f}"
        return f"{value} [{band.low:.3f}, {band.high:.3f}]" if band else value

    def published_text(self) -> str:
        return ", ".join(f"{name} {score['value']:g}" for name, score in self.published.items()) or "-"


@dataclass
class Leaderboard:
    """Every model's figures on one task, best first by ``primary``; ``notes`` compare neighbours."""

    task: str
    primary: str
    shown: tuple[str, ...]
    rows: list[Row]
    notes: list[str]
    record: dict[str, Any]

    def __str__(self) -> str:

        headers = ["model", "dim", "items/s", *self.shown, "published"]
        body = [[row.label, str(row.dim), f"{row.items_per_second:.0f}" if row.items_per_second else "-",
                 *(row.cell(m) for m in self.shown), row.published_text()] for row in self.rows]
        described = self.record["data"]
        size = ", ".join(f"{k} {v}" for k, v in described.items() if isinstance(v, int) and not isinstance(v, bool))
        lines = [f"{self.task} ({size}); {CONFIDENCE:.0%} bootstrap intervals over {self.record['resamples']} "
                 f"resamples, seed {self.record['seed']}", text_table(body, headers), *self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "primary": self.primary, "notes": self.notes, **self.record,
                "models": [asdict(row) for row in self.rows]}

    def write(self, folder: str | Path) -> list[Path]:
        """``leaderboard.json`` (everything), ``leaderboard.parquet`` (a row per model, each metric
        with its interval, provenance as JSON) and ``leaderboard.png`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / name for name in FILES]
        write_json_atomic(paths[0], self.to_dict())
        self._write_parquet(paths[1])
        plot(self, paths[2])
        return paths

    def _write_parquet(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        metrics = list(self.rows[0].values)
        columns: dict[str, list[Any]] = {"label": [], "model": [], "dim": [], "items_per_second": []}
        for row in self.rows:
            for key, value in (("label", row.label), ("model", row.model), ("dim", row.dim),
                               ("items_per_second", row.items_per_second)):
                columns[key].append(value)
            for metric in metrics:
                band = row.intervals.get(metric)
                columns.setdefault(metric, []).append(row.values[metric])
                columns.setdefault(f"{metric}_low", []).append(band.low if band else None)
                columns.setdefault(f"{metric}_high", []).append(band.high if band else None)
            for key in ("published", "provenance", "details"):
                columns.setdefault(key, []).append(json.dumps(getattr(row, key), sort_keys=True, default=str))
        table = pa.table(columns).replace_schema_metadata(
            {"zoo": json.dumps({k: v for k, v in self.to_dict().items() if k != "models"}, default=str)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)


def plot(board: Leaderboard, path: Path) -> Path:
    """One panel per shown metric: a bar per model, best first, with its interval as a whisker."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = board.rows
    fig, axes = plt.subplots(1, len(board.shown), figsize=(3.6 * len(board.shown) + 1.5, 0.45 * len(rows) + 1.6),
                             sharey=True, constrained_layout=True, squeeze=False)
    places = list(range(len(rows)))[::-1]
    for ax, metric in zip(axes[0], board.shown):
        values = [row.values[metric] for row in rows]
        low = [row.values[metric] - row.intervals[metric].low if metric in row.intervals else 0 for row in rows]
        high = [row.intervals[metric].high - row.values[metric] if metric in row.intervals else 0 for row in rows]
        ax.barh(places, values, xerr=[low, high], color="#4c72b0", ecolor="#222222", capsize=3, height=0.6)
        for place, value in zip(places, values):
            ax.text(value / 2 if value > 0 else 0, place, f"{value:.3f}", va="center", ha="center", color="white",
                    fontsize=8)
        top = max((row.intervals[metric].high if metric in row.intervals else row.values[metric]) for row in rows)
        ax.set_xlim(0, max(1.0, math.ceil(top * 10) / 10) if top <= 1 else top * 1.05)
        ax.set_title(metric.replace("_", " "))
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(places, [row.label for row in rows])
    fig.suptitle(f"{board.task}: {CONFIDENCE:.0%} bootstrap intervals ({board.record['resamples']} resamples)",
                 fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
