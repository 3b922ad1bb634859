"""The tasks on labelled items: classification (k-NN and a linear probe), zero-shot
classification, clustering, and duplicate detection (labels are duplicate groups).

Items come as ``finetune`` reads them: a folder with one subfolder per class, a CSV / TSV /
JSONL / parquet table with a text (or file path) column and a label column, or ``(inputs,
labels)`` in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core._rows import unit_rows
from zoo.core._zero_shot import label_vectors
from zoo.errors import UnsupportedOptionError, ZooError
from zoo.training._data import Examples, label_index, read_examples

from ._labelled import (
    KNN_K,
    Split,
    kmeans_assignments,
    knn_predict,
    linear_probe,
    macro_f1,
    stratified_split,
    v_measure,
)
from ._task import Embedded, ItemSet, Scored, Task, data_name, is_media

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._embed_options import EmbedOptions
    from zoo.core._model import Model


@dataclass
class _Labelled(Task):
    """Items and their labels, read once."""

    items: Any = None
    text_column: str = "text"
    label_column: str = "label"

    def __post_init__(self) -> None:
        if self.items is None:
            raise ZooError(f"the {self.name} task needs labelled items: a folder per class, or a table with "
                           f"{self.text_column!r} and {self.label_column!r} columns")
        self._examples: Examples | None = None

    @property
    def examples(self) -> Examples:
        if self._examples is None:

            examples = read_examples(self.items, text_column=self.text_column, label_column=self.label_column)
            if len(set(map(str, examples.labels))) < 2:
                raise ZooError(f"{data_name(self.items)} holds {len(examples)} items of fewer than two labels; "
                               f"the {self.name} task compares two or more")
            self._examples = examples
        return self._examples

    @property
    def labels(self) -> np.ndarray:
        import numpy as np

        return np.asarray([str(label) for label in self.examples.labels])

    def item_sets(self) -> list[ItemSet]:
        inputs = self.examples.inputs
        return [ItemSet("items", tuple(inputs), is_media(inputs))]

    def describe(self, seed: int) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return {"task": self.name, "items": data_name(self.items), "count": len(self.examples), "labels": counts}


@dataclass
class Classification(_Labelled):
    """k-NN and linear-probe accuracy and macro-F1 on a fixed stratified test split."""

    test_fraction: float = 0.5
    k: int = KNN_K

    name: ClassVar[str] = "classification"
    primary: ClassVar[str] = "probe_accuracy"
    shown: ClassVar[tuple[str, ...]] = ("probe_accuracy", "probe_macro_f1", "knn_accuracy", "knn_macro_f1")

    def split(self, seed: int) -> Split:
        return stratified_split(self.labels, self.test_fraction, seed)

    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:
        rows, labels, split = embedded["items"].rows, self.labels, self.split(seed)
        truth = labels[split.test]
        knn = knn_predict(rows, labels, split, self.k)
        probe = linear_probe(rows, labels, split)

        def recompute(drawn: np.ndarray) -> dict[str, float]:
            return {"knn_macro_f1": macro_f1(truth[drawn], knn[drawn]),
                    "probe_macro_f1": macro_f1(truth[drawn], probe.predictions[drawn])}

        per_item = {"knn_accuracy": (knn == truth).astype(float), "probe_accuracy": (probe.predictions == truth)
                    .astype(float)}
        values = {name: float(v.mean()) for name, v in per_item.items()} | recompute(_all(len(truth)))
        return Scored(values, len(truth), per_item, recompute,
                      {"probe_c": probe.c, "probe_validation_accuracy": {str(c): a for c, a in
                                                                         probe.validation_accuracy.items()}})

    def describe(self, seed: int) -> dict[str, Any]:
        split = self.split(seed)
        return {**super().describe(seed), "test_fraction": self.test_fraction, "k": self.k,
                "split": {"seed": seed, "train": split.train, "test": split.test},
                "protocol": "k-NN (cosine, majority of k) and a logistic-regression probe whose C is chosen on a "
                            "stratified fifth of the training split, then refit on all of it"}


@dataclass
class ZeroShot(_Labelled):
    """Each item labelled by the nearest label text (the model's text tower), accuracy and macro-F1."""

    label_names: Mapping[str, str] = field(default_factory=dict)
    templates: Sequence[str] | None = None

    name: ClassVar[str] = "zero-shot"
    primary: ClassVar[str] = "accuracy"
    shown: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")

    def check(self, model: Model) -> None:
        if "text" not in model.towers:
            raise UnsupportedOptionError(f"{model.name} is a {model.modality} model with no text tower: it cannot "
                                         "score label names; leave it out of a zero-shot comparison (the "
                                         "classification task compares any model)")

    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:

        classes = label_index(self.labels)
        unknown = sorted(set(self.label_names) - set(classes))
        if unknown:
            raise ZooError(f"label names are given for {unknown}, which no item has (labels: {classes})")
        vectors = label_vectors(model, [self.label_names.get(c, c) for c in classes], self.templates,
                                options=_label_options(model, embedded["items"].options))
        predicted = (unit_rows(embedded["items"].rows) @ vectors.T).argmax(axis=1)
        truth = self.labels
        named = [classes[i] for i in predicted]
        import numpy as np

        named_array = np.asarray(named)

        def recompute(drawn: np.ndarray) -> dict[str, float]:
            return {"macro_f1": macro_f1(truth[drawn], named_array[drawn])}

        correct = (named_array == truth).astype(float)
        return Scored({"accuracy": float(correct.mean()), **recompute(_all(len(truth)))}, len(truth),
                      {"accuracy": correct}, recompute)

    def describe(self, seed: int) -> dict[str, Any]:
        return {**super().describe(seed), "label_names": dict(self.label_names),
                "templates": list(self.templates) if self.templates else "the model's default"}


@dataclass
class Clustering(_Labelled):
    """k-means with one centre per label on the unit rows, scored by V-measure."""

    name: ClassVar[str] = "clustering"
    primary: ClassVar[str] = "v_measure"
    shown: ClassVar[tuple[str, ...]] = ("v_measure",)

    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:
        truth = self.labels
        assigned = kmeans_assignments(embedded["items"].rows, len(set(truth)), seed)

        def recompute(drawn: np.ndarray) -> dict[str, float]:
            return {"v_measure": v_measure(truth[drawn], assigned[drawn])}

        return Scored(dict(recompute(_all(len(truth)))), len(truth), recompute=recompute)


def _label_options(model: Model, items: EmbedOptions) -> EmbedOptions:
    """The label texts' options: the items' own (no prompt) when the items are texts, else the
    text tower's, cut to the same width, so both sides are one embedding."""
    if items.tower == "text":
        return dataclasses.replace(items, prompt="", prompt_name=None)
    return model.embed_options(tower="text", normalize=True, truncate_dim=items.truncate_dim)


def _all(count: int) -> np.ndarray:
    import numpy as np

    return np.arange(count)
