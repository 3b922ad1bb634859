"""Ray Data integration: embed a column of a ``ray.data.Dataset`` with any zoo model, at cluster scale.

>>> import ray, zoo.ray
>>> ds = ray.data.read_parquet("s3://bucket/texts/")
>>> ds = zoo.ray.featurize(ds, "minilm-l6", column="text", concurrency=4)
>>> ds.write_parquet("s3://bucket/embeddings/")

Each Ray actor loads the model once (``map_batches`` with a callable class) and embeds the batches
it is given with :meth:`zoo.Model.featurize`, so the vectors equal the single-process ones. Every
other column of the dataset is kept, so an id column makes any order recoverable; set
``DataContext.get_current().execution_options.preserve_order = True`` to keep input order too.

Needs the ``ray`` extra: ``pip install 'zoo-models[ray]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.catalog._loader import load
from zoo.core._featurize import OnError
from zoo.core._quantize import needs_calibration

from .errors import did_you_mean

if TYPE_CHECKING:
    import numpy as np
    import ray.data


class _Embedder:
    """One per Ray actor: loads the model in ``__init__`` and embeds one column of each batch."""

    def __init__(self, model: str, column: str, output_column: str, featurize_options: dict[str, Any],
                 load_options: dict[str, Any]) -> None:
        self.model = load(model, **load_options)
        self.model.require_dense("zoo.ray.featurize")
        self.column = column
        self.output_column = output_column
        self.options = featurize_options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if self.column not in batch:
            raise KeyError(f"dataset has no column {self.column!r}{did_you_mean(self.column, list(batch))} "
                           f"(columns: {', '.join(batch)})")
        embeddings, report = self.model.featurize_with_report(list(batch[self.column]), progress=False,
                                                              **self.options)
        kept = report.kept
        if len(kept) != len(batch[self.column]):  # on_error="skip" left some rows out: drop them everywhere
            batch = {name: values[kept] for name, values in batch.items()}
        return {**batch, self.output_column: embeddings}


def _check_calibration(options: dict[str, Any], calibration: np.ndarray | None) -> None:
    if needs_calibration(str(options.get("precision", "float32"))) and calibration is None:
        raise ValueError(f"precision={options['precision']!r} over a Ray dataset needs calibration= (float "
                         "embeddings of a representative set), so every batch is bucketed alike")


def featurize(
    dataset: ray.data.Dataset,
    model: str,
    *,
    column: str,
    output_column: str = "embedding",
    batch_size: int = 256,
    model_batch_size: int = 32,
    normalize: bool | None = None,
    pool: str | None = None,
    on_error: OnError = "raise",
    device: str | None = None,
    dtype: str | None = None,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    calibration: np.ndarray | None = None,
    **options: Any,
) -> ray.data.Dataset:
    """Add an embedding column to ``dataset``: the lazy Ray Data equivalent of :meth:`zoo.Model.featurize`.

    Args:
        dataset: a Ray dataset with a column of items the model takes (texts, image paths or
            ``HxWxC`` arrays from ``ray.data.read_images``, audio paths...).
        model: anything :func:`zoo.load` accepts; each actor loads it once.
        column: the input column.
        output_column: the new column, a fixed-shape ``(D,)`` float32 tensor per row.
        batch_size: rows Ray hands each actor call; ``model_batch_size`` rows go through the model
            at a time (text is sorted by length within each Ray batch).
        normalize, pool, on_error: as in :meth:`zoo.Model.featurize`; with ``on_error="skip"``
            bad rows are dropped from the output.
        device, dtype: as in :func:`zoo.load`.
        concurrency: actors (or a ``(min, max)`` autoscaling range).
        num_cpus, num_gpus: resources each actor reserves.
        calibration, **options: as in :meth:`zoo.Model.featurize`; int8 / uint8 need
            ``calibration``, since buckets computed per Ray batch would differ.

    Returns: a lazy dataset, the input columns plus ``output_column``; nothing runs until consumed.
    """
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError("zoo.ray needs Ray Data: pip install 'zoo-models[ray]'") from exc
    _check_calibration(options, calibration)
    resources: dict[str, Any] = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v is not None}
    return dataset.map_batches(
        _Embedder,
        fn_constructor_kwargs={
            "model": model,
            "column": column,
            "output_column": output_column,
            "featurize_options": {"batch_size": model_batch_size, "normalize": normalize, "pool": pool,
                                  "on_error": on_error, "calibration": calibration, **options},
            "load_options": {"device": device, "dtype": dtype},
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        **resources,
    )
