"""Published scores in the catalogue: what each metric means and which way is better.

A registry entry carries the figures its authors published, each with its source::

    scores:
      top1: {value: 80.858, source: "https://...", note: "224 px crop"}

zoo never computes or invents these: an entry with no published figure has none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zoo.errors import RegistryError, did_you_mean


@dataclass(frozen=True)
class Metric:
    """A kind of published figure."""

    description: str
    higher_is_better: bool = True


#: The metrics the curated catalogue uses; a plugin's entry may name others (sorted high first).
METRICS: dict[str, Metric] = {
    "top1": Metric("ImageNet-1k validation top-1 accuracy (%)"),
    "linear-top1": Metric("ImageNet-1k top-1 of a linear probe on frozen features (%)"),
    "zeroshot-top1": Metric("zero-shot ImageNet-1k top-1 accuracy (%)"),
    "mteb": Metric("MTEB English average over 56 datasets"),
    "sbert-sentence": Metric("sbert.net sentence-embedding performance, average of 14 datasets"),
    "eer": Metric("speaker-verification equal error rate (%)", higher_is_better=False),
}
_METRIC_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SCORE_KEYS = ("value", "source", "note")


def check_scores(model: str, scores: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``scores`` as plain data, each a number with its source; a RegistryError names what is wrong."""
    out = {}
    for metric, score in scores.items():
        where = f"score {metric!r} of {model!r}"
        if not _METRIC_NAME.match(str(metric)):
            raise RegistryError(f"{where}: a metric name is lowercase letters, digits and dashes")
        if not isinstance(score, Mapping):
            raise RegistryError(f"{where} must be a mapping {{value: ..., source: ...}}, not {score!r}")
        for key in score:
            if key not in _SCORE_KEYS:
                raise RegistryError(f"{where}: unknown field {key!r}{did_you_mean(str(key), _SCORE_KEYS)}")
        value = score.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RegistryError(f"{where}: value must be a number, not {value!r}")
        source = score.get("source")
        if not isinstance(source, str) or not source.startswith(("https://", "http://")):
            raise RegistryError(f"{where}: every published figure needs its source (an http(s) address)")
        out[str(metric)] = dict(score)
    return out


def sort_key(metric: str) -> Any:
    """A key ordering specs best-first by ``metric``; specs without it are left out by the caller."""
    sign = -1 if METRICS.get(metric, Metric("")).higher_is_better else 1
    return lambda spec: sign * float(spec.scores[metric]["value"])
