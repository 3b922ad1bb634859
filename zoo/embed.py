"""``zoo embed``: stream inputs through a model into parquet or ``.npy``, in bounded memory, resumably.

Inputs are read and embedded ``chunk_size`` items at a time. Each finished chunk is written as its
own parquet file (temporary name, then rename) in ``OUT.partial/``, next to a ``run.json`` naming
the model, the inputs and the settings, with a content digest of its items. Killed at any moment
and run again with the same command, the run keeps every chunk already written whose inputs are
unchanged and computes only the rest. When every chunk is there, the parts are streamed into
``OUT`` under a temporary name that is renamed at the end: a file at ``OUT`` is always complete, and
carries its provenance (model, revision, weight sha256, embed_dim, preprocessing, zoo version) in
its metadata. Skipped inputs are listed, with their reasons, in ``OUT.skipped.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from .atomic import atomic_path, write_json_atomic
from .embedding_file import embedding_rows
from .errors import ZooError
from .inputs import InputSource, chunk_digest, content_hash
from .provenance import embedding_provenance
from .quantize import calibration_ranges, needs_calibration, output_dtype, quantize
from .settings import zoo_home

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from .adapter import Adapter
    from .embed_options import EmbedOptions

FORMATS = (".parquet", ".npy")
DEFAULT_CHUNK_TEXT = 4096
DEFAULT_CHUNK_MEDIA = 512


@dataclass
class EmbedSummary:
    """What a ``zoo embed`` run wrote: rows, skipped inputs (and where they are listed), chunks."""

    output: Path
    rows: int
    skipped: list[tuple[Any, str]]
    skipped_file: Path | None
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


def check_output(output: str | os.PathLike[str], inputs: InputSource | None = None) -> Path:
    """The output path, if its format is one zoo writes and it is none of the inputs."""
    path = Path(output)
    if path.suffix not in FORMATS:
        raise ZooError(f"unsupported output {path.name!r}: write to a {' or '.join(FORMATS)} file")
    if inputs is not None:
        target = path.resolve()
        if any(Path(p).resolve() == target for p in inputs.paths()):
            raise ZooError(f"-o {output} is one of the inputs; writing there would replace your data: "
                           "choose another output file")
    return path


def _schema(width: int, id_type: pa.DataType, metadata: dict[str, Any], precision: str = "float32") -> pa.Schema:
    """``id``, a fixed-size ``embedding`` list of the precision's type (float32, int8 or uint8)
    and ``content_sha256``, the hash of each row's input (see :func:`zoo.inputs.content_hash`)."""
    import pyarrow as pa

    value_type = pa.from_numpy_dtype(output_dtype(precision))
    return pa.schema([("id", id_type), ("embedding", pa.list_(value_type, width)), ("content_sha256", pa.string())],
                     metadata={"zoo": json.dumps(metadata, sort_keys=True)})


def _table(ids: list[Any], rows: np.ndarray, hashes: Any, schema: pa.Schema) -> pa.Table:
    import pyarrow as pa

    embedding_type = schema.field("embedding").type
    flat = pa.array(rows.reshape(-1), type=embedding_type.value_type)
    embedding = pa.FixedSizeListArray.from_arrays(flat, embedding_type.list_size)
    return pa.Table.from_arrays([pa.array(ids, type=schema.field("id").type), embedding,
                                 pa.array(hashes, type=pa.string())], schema=schema)


@dataclass
class _Plan:
    """A run's fixed settings, recorded in ``run.json`` so that a resumed run is the same run."""

    partial: Path
    chunk_size: int
    chunks: int
    total: int
    meta: dict[str, Any]
    schema: pa.Schema  # of the parts: float32 rows, quantized only when assembled
    options: EmbedOptions


def _plan_run(model: Adapter, inputs: InputSource, output: Path, *, batch_size: int, chunk_size: int | None,
              normalize: bool, pool: str | None, num_workers: int, options: EmbedOptions) -> _Plan:
    """Create ``OUT.partial/run.json``, or check that the interrupted run there had these settings."""
    import pyarrow as pa

    partial = output.with_name(output.name + ".partial")
    run_file = partial / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else None
    if chunk_size is None:  # an interrupted run resumes with its own chunk size
        chunk_size = (previous or {}).get("chunk_size") or (
            DEFAULT_CHUNK_TEXT if model.modality == "text" else max(DEFAULT_CHUNK_MEDIA, 8 * batch_size * num_workers))
    if chunk_size < 1:
        raise ZooError(f"--chunk-size must be at least 1, got {chunk_size}")
    total = len(inputs)
    meta = embedding_provenance(model.spec, model.files, normalize=normalize, pool=pool, options=options)
    run = {"inputs": inputs.description, "fingerprint": inputs.fingerprint(), "total": total,
           "chunk_size": chunk_size, **{k: meta[k] for k in ("model", "sha256", "normalize", "pool", "embed_dim")},
           "options": options.provenance()}
    if previous is None:
        partial.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, run)
    elif previous != run:
        changed = sorted(k for k in run if previous.get(k) != run[k])
        raise ZooError(f"{partial} holds an interrupted run with other settings ({', '.join(changed)}); "
                       f"delete it to start over, or run the same command to resume")
    id_type = pa.string() if inputs.kind == "files" else pa.int64()
    return _Plan(partial, chunk_size, -(-total // chunk_size), total, meta,
                 _schema(options.float_dim, id_type, meta), options)


def _done_chunk(part: Path, chunk: list[tuple[Any, Any]], kind: str) -> bool:
    """Whether ``part`` holds this chunk's rows for inputs with the same content as now."""
    import pyarrow.parquet as pq

    if not part.is_file():
        return False
    recorded = pq.read_schema(part).metadata.get(b"digest", b"").decode()
    return recorded == chunk_digest([i for i, _ in chunk], [content_hash(x, kind) for _, x in chunk])


def _write_chunk(model: Adapter, chunk: list[tuple[Any, Any]], part: Path, plan: _Plan, kind: str,
                 **featurize: Any) -> None:
    """Embed one chunk and write it, with its skipped items and content digest, as one parquet part."""
    import pyarrow.parquet as pq

    ids = [i for i, _ in chunk]
    float_options = dataclasses.replace(plan.options, precision="float32")  # quantized when assembled
    with warnings.catch_warnings():  # skipped items are reported once, at the end, by id
        warnings.filterwarnings("ignore", message="featurize skipped", category=RuntimeWarning)
        rows, report = model.featurize_with_report([x for _, x in chunk], progress=False, options=float_options,
                                                   **featurize)
    hashes = [content_hash(x, kind) for _, x in chunk]
    table = _table([ids[i] for i in report.kept], rows, [hashes[i] for i in report.kept], plan.schema)
    skipped = json.dumps([[ids[i], why] for i, why in report.skipped], default=str)
    table = table.replace_schema_metadata({**table.schema.metadata, b"skipped": skipped.encode(),
                                           b"digest": chunk_digest(ids, hashes).encode()})
    with atomic_path(part) as tmp:
        pq.write_table(table, tmp)


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
    options: EmbedOptions | None = None,
    calibration: np.ndarray | None = None,
) -> EmbedSummary:
    """Embed ``inputs`` into ``output`` (``.parquet`` or ``.npy``), resuming an interrupted run.

    ``chunk_size`` is how many items each resumable part holds. By default: 4096 for text models;
    for the others (images and audio cost more per item) 512, or 8 batches per decode worker when
    that is more, since each chunk starts its workers afresh; so a kill loses seconds of work, not
    minutes. An interrupted run resumes with the chunk size it started with.

    ``options`` (from :meth:`zoo.Adapter.embed_options`: prompt, layers, truncation, precision)
    are recorded in the output's metadata. A quantized precision is applied when the parts are
    assembled, so int8 / uint8 buckets come from every row of the output (or from the float
    embeddings ``calibration``), as ``quantize_embeddings`` would bucket the whole matrix.
    """
    from tqdm.auto import tqdm

    output = check_output(output, inputs)
    began = time.perf_counter()
    normalize = model.resolve_normalize(normalize)
    pool = model.resolve_pool(pool)
    options = options or model.embed_options()
    with _exclusive(output):
        # on_error is not a setting of the run: a run that stopped at a bad input resumes with --skip-errors
        plan = _plan_run(model, inputs, output, batch_size=batch_size, chunk_size=chunk_size, normalize=normalize,
                         pool=pool, num_workers=num_workers, options=options)
        reused = 0
        with tqdm(total=plan.total, desc=f"embed {model.name}", unit="item", disable=not progress,
                  smoothing=0.1) as bar, _kept_on_disk_error(plan, output):
            stream = iter(inputs)
            for index in range(plan.chunks):
                chunk = list(itertools.islice(stream, plan.chunk_size))
                part = plan.partial / f"part-{index:06d}.parquet"
                if _done_chunk(part, chunk, inputs.kind):
                    reused += 1
                else:
                    _write_chunk(model, chunk, part, plan, inputs.kind, batch_size=batch_size,
                                 normalize=normalize, pool=pool, on_error=on_error, num_workers=num_workers)
                bar.update(len(chunk))
            return _finish(plan, output, reused, began, skip_allowed=on_error == "skip", calibration=calibration)


@contextlib.contextmanager
def _exclusive(output: Path) -> Iterator[None]:
    """Hold ``OUT``'s lock for the whole run: a second run to the same file is told so at once.
    The lock lives in ``ZOO_HOME/locks/``, keyed by OUT's full path, so nothing is left beside OUT."""
    output.parent.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(str(output.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    locks = zoo_home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"embed-{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ZooError(f"another zoo embed run is writing {output} (it holds {lock.lock_file}); wait for it to "
                       "finish, or write to another file") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _kept_on_disk_error(plan: _Plan, output: Path) -> Iterator[None]:
    """A full disk (or any write error) says what is kept and how to finish, instead of a bare OSError."""
    try:
        yield
    except OSError as exc:
        done = len(list(plan.partial.glob("part-*.parquet")))
        raise ZooError(f"could not write {output}: {exc.strerror or exc}; the {done} of {plan.chunks} chunks "
                       f"already embedded are kept in {plan.partial}: free space and run the same command to "
                       "finish") from exc


def _finish(plan: _Plan, output: Path, reused: int, began: float, *, skip_allowed: bool,
            calibration: np.ndarray | None) -> EmbedSummary:
    """Assemble the parts into ``output``, list skipped inputs beside it, and clear the staging folder."""
    import pyarrow.parquet as pq

    parts = sorted(plan.partial.glob("part-*.parquet"))
    if len(parts) != plan.chunks:
        raise ZooError(f"{plan.partial} has {len(parts)} of {plan.chunks} chunks; run the command again to finish")
    skipped: list[tuple[Any, str]] = []  # each part records its own, this run's or an earlier one's
    for part in parts:
        skipped += [tuple(x) for x in json.loads(pq.read_schema(part).metadata.get(b"skipped", b"[]"))]
    if skipped and not skip_allowed:  # chunks an earlier --skip-errors run wrote
        raise ZooError(f"input {skipped[0][0]}: {skipped[0][1]}; an earlier run of this command skipped "
                       f"{len(skipped)} inputs: pass --skip-errors to finish with them skipped")
    rows = _assemble(parts, output, plan, calibration)
    if rows + len(skipped) != plan.total:  # never a silently short output
        output.unlink()
        raise ZooError(f"counted {plan.total} inputs but embedded {rows} and skipped {len(skipped)}: the inputs "
                       f"changed during the run; delete {plan.partial} and run again")
    skipped_file = output.with_name(output.name + ".skipped.jsonl")
    if skipped:
        with atomic_path(skipped_file) as tmp:
            tmp.write_text("".join(json.dumps({"id": i, "reason": why}, default=str) + "\n" for i, why in skipped),
                           encoding="utf-8")
    else:
        skipped_file.unlink(missing_ok=True)  # from an earlier run of the same command
    shutil.rmtree(plan.partial)
    return EmbedSummary(output, rows, skipped, skipped_file if skipped else None, reused, plan.chunks,
                        plan.chunk_size, time.perf_counter() - began)


def _assemble(parts: list[Path], output: Path, plan: _Plan, calibration: np.ndarray | None) -> int:
    """Stream the parts into ``output`` atomically, quantized to the run's precision; returns the
    row count."""
    import pyarrow.parquet as pq

    precision = plan.options.precision
    meta = dict(plan.meta)
    ranges = None
    if needs_calibration(precision):
        ranges = calibration_ranges(calibration) if calibration is not None else _ranges_of(parts)
        meta["calibration"] = {"ranges": ranges.tolist(),
                               "from": "calibration embeddings" if calibration is not None else "this output"}
    schema = _schema(plan.options.width, plan.schema.field("id").type, meta, precision)
    rows = 0
    with atomic_path(output) as tmp:
        if output.suffix == ".parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    table = pq.read_table(part)
                    if precision == "float32":
                        table = table.replace_schema_metadata(schema.metadata)
                    else:
                        rows_of_part = quantize(embedding_rows(table), precision, ranges)
                        table = _table(table.column("id").to_pylist(), rows_of_part, table.column("content_sha256").to_pylist(),
                                       schema)
                    writer.write_table(table)
                    rows += table.num_rows
        else:
            rows = _write_npy(parts, tmp, plan.options.width, precision, ranges)
    return rows


def _ranges_of(parts: list[Path]) -> np.ndarray:
    """Each dimension's minimum and maximum over every part, one part in memory at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    low = high = None
    for part in parts:
        rows = embedding_rows(pq.read_table(part, columns=["embedding"]))
        if len(rows):
            low = rows.min(axis=0) if low is None else np.minimum(low, rows.min(axis=0))
            high = rows.max(axis=0) if high is None else np.maximum(high, rows.max(axis=0))
    if low is None:
        raise ZooError("no rows to calibrate int8 / uint8 buckets from; pass --calibration FILE")
    return np.vstack((low, high))


def _write_npy(parts: list[Path], path: Path, width: int, precision: str, ranges: np.ndarray | None) -> int:
    """A ``.npy`` file written with plain writes, part by part: a full disk raises ``OSError``
    (ENOSPC) here, where a memory-mapped file would kill the process with SIGBUS."""
    import numpy as np
    import pyarrow.parquet as pq

    counts = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    header = {"descr": np.lib.format.dtype_to_descr(output_dtype(precision)), "fortran_order": False,
              "shape": (sum(counts), width)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for part in parts:
            rows = embedding_rows(pq.read_table(part, columns=["embedding"]))
            fh.write(np.ascontiguousarray(quantize(rows, precision, ranges)).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    return sum(counts)
