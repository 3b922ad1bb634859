"""What every evaluation task is: the sets of items it embeds with each model, and how it scores
a model from their rows. A task reads its data once; every model is embedded and scored on the
same items, split and bootstrap draws."""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.catalog._registry import get_registry
from zoo.core._towers import column_tower
from zoo.embeddings._inputs import InputSource, items_source
from zoo.errors import ZooError

from ._bootstrap import Recompute

if TYPE_CHECKING:
    import numpy as np

    from zoo.core._embed_options import EmbedOptions
    from zoo.core._model import Model


@dataclass(frozen=True)
class ItemSet:
    """One set of inputs a task embeds with each model: texts, or media files (``media``)."""

    name: str
    items: tuple[Any, ...]
    media: bool = False

    @functools.cached_property
    def source(self) -> InputSource:
        """The items as ``zoo embed`` streams them, their content digested once for every model."""

        return items_source(self.items, f"the {len(self.items)} {self.name}", media=self.media)

    def tower(self, model: Model) -> str:
        """The tower of ``model`` these items go through; items it cannot take are refused here,
        before anything is embedded."""

        tower = column_tower(model, self.name, self.items)
        if (tower == "text") == self.media:
            what = "files" if self.media else "texts"
            raise ZooError(f"the {self.name} are {what} ({self.items[0]!r}...), but {model.name} embeds them with "
                           f"its {tower} tower: evaluate models of the items' modality")
        return tower


@dataclass(frozen=True)
class Embedded:
    """One item set's rows from one model, the file they are cached in, the pace they were
    embedded at (items per second, measured when they were computed) and the options they were
    embedded with."""

    rows: np.ndarray
    path: Path
    items_per_second: float | None
    options: EmbedOptions


@dataclass
class Scored:
    """A model's figures on a task.

    Attributes:
        values: each metric on all the task's items.
        items: how many items the bootstrap resamples (queries, test items).
        per_item: the metrics that are a mean over items, item by item.
        recompute: the other metrics, computed on the item positions of one resample.
        details: what the scoring chose, for the record (the probe's regularisation...).
    """

    values: dict[str, float]
    items: int
    per_item: dict[str, np.ndarray] = field(default_factory=dict)
    recompute: Recompute | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """An evaluation task; see :mod:`zoo.evaluation`."""

    #: the task's name, as ``zoo evaluate --task`` takes it
    name: ClassVar[str]
    #: the metric the leaderboard is ranked by and its notes compare
    primary: ClassVar[str]
    #: the metrics the printed leaderboard shows (the files hold them all)
    shown: ClassVar[tuple[str, ...]]

    @abstractmethod
    def item_sets(self) -> list[ItemSet]:
        """The inputs to embed with each model, read once."""

    def shown_metrics(self) -> tuple[str, ...]:
        """The metrics the printed leaderboard shows: :attr:`shown`, and any this task's settings add."""
        return self.shown

    def check(self, model: Model) -> None:  # noqa: B027 (a hook whose default accepts every model)
        """Refuse a model this task cannot score, before anything is embedded (default: any will do)."""

    def prompts(self, model: Model) -> Mapping[str, str | None]:
        """The prompt name each item set's texts take with ``model`` (default: none)."""
        return {}

    @abstractmethod
    def score(self, model: Model, embedded: Mapping[str, Embedded], seed: int) -> Scored:
        """``model``'s figures from the rows of each item set, by name."""

    @abstractmethod
    def describe(self, seed: int) -> dict[str, Any]:
        """The data and settings (with the split ``seed`` makes), written beside the results so
        that they can be reproduced."""


def is_media(items: Sequence[Any]) -> bool:
    """Whether ``items`` are all paths of media files (of any registered modality)."""
    suffixes = get_registry().media_suffixes()
    return bool(items) and all(isinstance(x, str) and Path(x).suffix.lower() in suffixes and os.path.isfile(x)
                               for x in items)


def data_name(data: Any) -> str:
    """How a task's data is named in its record: the path given, or what kind of object it was."""
    return os.fspath(data) if isinstance(data, (str, os.PathLike)) else f"<{type(data).__name__} in memory>"
