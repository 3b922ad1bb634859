"""``zoo embed``: stream inputs through a model into parquet or ``.npy``, in bounded memory, resumably.

Inputs are read and embedded ``chunk_size`` items at a time. Each finished chunk is written as its
own parquet file (temporary name, then rename) in ``OUT.partial/``, next to a ``run.json`` naming
the model, the inputs and the settings. Killed at any moment and run again with the same command,
the run keeps every chunk already written and computes only the missing ones. When every chunk is
there, the parts are streamed, row group by row group, into ``OUT`` under a temporary name that is
renamed at the end: a file at ``OUT`` is always complete, and carries its provenance (model,
revision, weight sha256, embed_dim, preprocessing, zoo version) in its metadata.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ZooError
from .inputs import InputSource
from .manifest import write_json_atomic

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from .adapter import Adapter

FORMATS = (".parquet", ".npy")
DEFAULT_CHUNK_TEXT = 4096
DEFAULT_CHUNK_MEDIA = 512


@dataclass
class EmbedSummary:
    output: Path
    rows: int
    skipped: list[tuple[Any, str]]
    chunks_done_before: int
    chunks: int
    chunk_size: int
    seconds: float


def default_workers(device: str) -> int:
    """Decode processes for ``zoo embed``: every core but one, at most 4 when the model runs on the
    CPU (it needs the cores too) and 16 on a GPU, where decoding is the slower stage (an H100 ran
    EfficientNet-Lite0 at 5600 images/s; one process decodes a few dozen camera JPEGs a second)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4 if str(device).startswith("cpu") else 16, cores - 1))


def check_output(output: str | os.PathLike[str]) -> Path:
    """The output path, if its format is one zoo writes."""
    path = Path(output)
    if path.suffix not in FORMATS:
        raise ZooError(f"unsupported output {path.name!r}: write to a {' or '.join(FORMATS)} file")
    return path


def provenance(model: Adapter, *, normalize: bool, pool: str | None) -> dict[str, Any]:
    """What produced the embeddings, for the output file's metadata."""
    spec = model.spec
    return {"model": spec.name, "backend": spec.backend, "modality": spec.modality,
            "revision": spec.revision, "sha256": dict(spec.sha256), "embed_dim": model.embed_dim,
            "normalize": normalize, "pool": pool, "preprocessing": _jsonable(dict(spec.preprocessing)),
            "source": model.files.source.describe() if model.files else None, "zoo_version": __version__}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _schema(dim: int, id_type: pa.DataType, metadata: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("id", id_type), ("embedding", pa.list_(pa.float32(), dim))],
                     metadata={"zoo": json.dumps(metadata, sort_keys=True)})


def _table(ids: list[Any], rows: np.ndarray, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    flat = pa.array(rows.reshape(-1), type=pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])
    return pa.Table.from_arrays([pa.array(ids, type=schema.field("id").type), embedding], schema=schema)


def embed_to_file(
    model: Adapter,
    inputs: InputSource,
    output: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    chunk_size: int | None = None,
    normalize: bool | None = None,
    pool: str | None = None,
    on_error: str = "raise",
    num_workers: int = 0,
    progress: bool = True,
) -> EmbedSummary:
    """Embed ``inputs`` into ``output`` (``.parquet`` or ``.npy``), resuming an interrupted run.

    ``chunk_size`` is how many items each resumable part holds. By default: 4096 for text models;
    for the others (images and audio cost more per item) 512, or 8 batches per decode worker when
    that is more, since each chunk starts its workers afresh; so a kill loses seconds of work, not
    minutes. An interrupted run resumes with the chunk size it started with.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    output = check_output(output)
    began = time.perf_counter()
    normalize = bool(model.spec.normalize) if normalize is None else normalize
    pool = model.check_pool(pool)
    total = len(inputs)
    partial = output.with_name(output.name + ".partial")
    run_file = partial / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else None
    if chunk_size is None:  # an interrupted run resumes with its own chunk size
        chunk_size = (previous or {}).get("chunk_size") or (
            DEFAULT_CHUNK_TEXT if model.modality == "text"
            else max(DEFAULT_CHUNK_MEDIA, 8 * batch_size * num_workers))
    if chunk_size < 1:
        raise ZooError(f"--chunk-size must be at least 1, got {chunk_size}")
    chunks = -(-total // chunk_size)
    meta = provenance(model, normalize=normalize, pool=pool)
    run = {"inputs": inputs.description, "fingerprint": inputs.fingerprint(), "total": total,
           "chunk_size": chunk_size, "on_error": on_error, **{k: meta[k] for k in ("model", "sha256", "normalize",
                                                                                 "pool", "embed_dim")}}
    if previous is None:
        partial.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, run)
    elif previous != run:
        changed = sorted(k for k in run if previous.get(k) != run[k])
        raise ZooError(f"{partial} holds an interrupted run with other settings ({', '.join(changed)}); "
                       f"delete it to start over, or run the same command to resume")
    done = {int(p.stem.split("-")[1]) for p in partial.glob("part-*.parquet")}
    id_type = pa.string() if inputs.kind == "files" else pa.int64()
    schema = _schema(model.embed_dim, id_type, meta)

    bar = tqdm(total=total, desc=f"embed {model.name}", unit="item", disable=not progress, smoothing=0.1)
    stream = iter(inputs)
    for index in range(chunks):
        chunk = list(itertools.islice(stream, chunk_size))
        if index in done:
            bar.update(len(chunk))
            continue
        ids = [i for i, _ in chunk]
        with warnings.catch_warnings():  # skipped items are reported once, at the end, by id
            warnings.filterwarnings("ignore", message="featurize skipped", category=RuntimeWarning)
            rows = model.featurize([x for _, x in chunk], batch_size=batch_size, normalize=normalize, pool=pool,
                                   progress=False, on_error=on_error, num_workers=num_workers)
        report = model.last_report
        table = _table([ids[i] for i in report.kept], rows, schema)
        table = table.replace_schema_metadata({**table.schema.metadata, b"skipped": json.dumps(
            [[ids[i], why] for i, why in report.skipped], default=str).encode()})
        part = partial / f"part-{index:06d}.parquet"
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        bar.update(len(chunk))
    bar.close()

    parts = sorted(partial.glob("part-*.parquet"))
    if len(parts) != chunks:
        raise ZooError(f"{partial} has {len(parts)} of {chunks} chunks; run the command again to finish")
    skipped: list[tuple[Any, str]] = []  # each part records its own, this run's or an earlier one's
    for part in parts:
        skipped += [tuple(x) for x in json.loads(pq.read_schema(part).metadata.get(b"skipped", b"[]"))]
    rows = _assemble(parts, output, schema, model.embed_dim)
    shutil.rmtree(partial)
    return EmbedSummary(output, rows, skipped, len(done), chunks, chunk_size, time.perf_counter() - began)


def _assemble(parts: list[Path], output: Path, schema: pa.Schema, dim: int) -> int:
    """Stream the parts into ``output`` (temporary name, then rename); returns the row count."""
    import numpy as np
    import pyarrow.parquet as pq

    tmp = output.with_name(f".{output.name}.tmp")
    rows = 0
    try:
        if output.suffix == ".parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    table = pq.read_table(part).replace_schema_metadata(schema.metadata)
                    writer.write_table(table)
                    rows += table.num_rows
        else:
            counts = [pq.ParquetFile(p).metadata.num_rows for p in parts]
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(sum(counts), dim))
            for part, count in zip(parts, counts):
                column = pq.read_table(part, columns=["embedding"]).column(0).combine_chunks()
                array[rows:rows + count] = column.values.to_numpy().reshape(count, dim)
                rows += count
            array.flush()
            del array
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
