"""A table of predictions, as ``zoo classify`` writes it: ``id``, ``label`` (the most probable),
``score`` (its probability) and one probability column per label, in parquet (with the model's
provenance, the labels and the templates in its metadata) or CSV, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.store._atomic import atomic_path

if TYPE_CHECKING:
    import numpy as np

SUFFIXES = (".parquet", ".csv")
METADATA_KEY = b"zoo"


def check_predictions_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if zoo can write a predictions table there; checked before the model loads."""
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{out}: write predictions to a .parquet or .csv file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent} does not exist; create it first")
    return out


def write_predictions(path: str | os.PathLike[str], ids: Sequence[Any], labels: Sequence[str], probs: np.ndarray,
                      provenance: dict[str, Any]) -> Path:
    """Write the table (see the module) and return its path."""
    import pyarrow as pa

    out = check_predictions_output(path)
    best = probs.argmax(axis=1)
    columns: dict[str, Any] = {
        "id": pa.array([str(i) for i in ids]),
        "label": pa.array([labels[i] for i in best]),
        "score": pa.array(probs[range(len(best)), best], type=pa.float32()),
    }
    for i, label in enumerate(labels):
        columns[f"p({label})"] = pa.array(probs[:, i], type=pa.float32())
    table = pa.table(columns)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            meta = {METADATA_KEY: json.dumps({**provenance, "labels": list(labels)}, default=str).encode()}
            pq.write_table(table.replace_schema_metadata(meta), tmp)
    return out
