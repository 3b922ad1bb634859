"""``zoo embed``: stream inputs through a model into parquet or ``.npy``, in bounded memory, resumably.

Inputs are read and embedded a chunk at a time, each chunk sized to take about two seconds of work
(five for images and audio) at the pace the run is going (or ``chunk_size`` items when asked), so a
kill loses seconds of work whatever the model's speed. Each finished chunk is written as
its own parquet file (temporary name, then rename) in ``OUT.partial/``, named by its first input's
position and recording how many inputs it covers and a content digest of them, next to a
``run.json`` naming the model, the inputs and the settings. Killed at any moment and run again with
the same command, the run keeps every chunk already written whose inputs are unchanged and computes
only the rest. When every chunk is there, the parts are streamed into
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from zoo.core._quantize import calibration_ranges, needs_calibration, output_dtype, quantize
from zoo.core._rows import DenseRows, embedding_rows
from zoo.errors import ZooError
from zoo.store._atomic import atomic_path, write_json_atomic
from zoo.store._provenance import embedding_provenance
from zoo.store._settings import zoo_home

from ._inputs import InputSource, chunk_digest, content_hash

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from zoo.core._embed_options import EmbedOptions
    from zoo.core._model import Model
    from zoo.core._rows import RowFormat

FORMATS = (".parquet", ".npy")
DENSE = DenseRows()  # an embedder's rows
# The most items one chunk holds: text is sorted by length within a chunk, so a chunk is also the
# window that sorting sees; images and audio hold decoded arrays.
DEFAULT_CHUNK_TEXT = 4096
DEFAULT_CHUNK_MEDIA = 512
# Seconds of work a chunk aims at: about what a kill loses. Longer for images and audio, since each
# chunk starts its decode workers afresh (at 1.5 s, EfficientNet-Lite0 from JPEGs ran 30% slower).
DEFAULT_CHUNK_SECONDS_TEXT = 2.0
DEFAULT_CHUNK_SECONDS_MEDIA = 5.0
# A chunk takes at most this many times the items of the one before, while the pace settles.
_CHUNK_GROWTH = 4


@dataclass
class EmbedSummary:
    """What a ``zoo embed`` run wrote: rows, skipped inputs (and where they are listed), chunks."""

    output: Path
    rows: int
    skipped: list[tuple[Any, str]]
    skipped_file: Path | None
    chunks_done_before: int
    chunks: int
    chunk_size: int  # the most items a chunk held (the fixed size, when one was asked for)
    seconds: float
    inputs_done_before: int = 0


def default_workers(device: str) -> int:
    """Decode processes for ``zoo embed``: every core but one, at most 4 when the model runs on the
    CPU (it needs the cores too) and 16 on a GPU, where decoding is the slower stage (an H100 ran
    EfficientNet-Lite0 at 5600 images/s; one process decodes a few dozen camera JPEGs a second)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4 if str(device).startswith("cpu") else 16, cores - 1))


def check_embedding_output(output: str | os.PathLike[str], inputs: InputSource | None = None) -> Path:
    """The output path, if its format is one zoo writes and it is none of the inputs."""
    path = Path(output)
    if path.suffix not in FORMATS:
        raise ZooError(f"unsupported output {path.name!r}: write to a {' or '.join(FORMATS)} file")
    if inputs is not None:
        target = path.resolve()
        if any(Path(p).resolve() == target for p in inputs.paths()):
            raise ZooError(f"-o {output} is one of the inputs; writing there would replace your data: "
                           "choose another output file")
        if path.suffix != ".parquet" and (inputs.id_column or inputs.keep):
            raise ZooError(f"-o {output}: a {path.suffix} file holds the rows only; write a .parquet file to keep "
                           "--id-column and --keep-columns beside them")
    return path


def _schema(width: int, id_type: pa.DataType, metadata: dict[str, Any], precision: str = "float32",
            kept: Sequence[pa.Field] = (), *, row_format: RowFormat = DENSE, extra: dict[str, str] | None = None
            ) -> pa.Schema:
    """``id``, the row format's columns (an embedder's: a fixed-size ``embedding`` list of the
    precision's type, float32, int8 or uint8), ``content_sha256``, the hash of each row's input (see
    :func:`zoo.embeddings._inputs.content_hash`), then the user's kept columns. ``extra`` metadata
    (the format's own: a vocabulary) is stored under ``zoo.``-prefixed keys beside the provenance."""
    import pyarrow as pa

    fields = row_format.fields(width, precision)
    stored = {"zoo": json.dumps(metadata, sort_keys=True), **{f"zoo.{k}": v for k, v in (extra or {}).items()}}
    return pa.schema([("id", id_type), *fields, ("content_sha256", pa.string()), *kept], metadata=stored)


def _kept_fields(schema: pa.Schema, row_format: RowFormat) -> list[pa.Field]:
    """The user's kept columns of an embedding table's schema: those after zoo's own."""
    return list(schema)[2 + len(row_format.columns):]


def _table(ids: list[Any], rows: Any, hashes: Any, schema: pa.Schema, kept: Sequence[Any] = (), *,
           row_format: RowFormat = DENSE) -> pa.Table:
    """One table of ``schema`` from its columns; ``kept`` holds the values of each kept column."""
    import pyarrow as pa

    row_fields = list(schema)[1:1 + len(row_format.columns)]
    columns = [pa.array(ids, type=schema.field("id").type), *row_format.to_arrow(rows, row_fields),
               pa.array(hashes, type=pa.string())]
    for field, values in zip(_kept_fields(schema, row_format), kept):
        try:
            columns.append(values if isinstance(values, pa.ChunkedArray) else pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ZooError(f"column {field.name!r} holds values of more than one type ({exc}); convert it to one "
                           "type in the table, or keep another column") from None
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass
class _Plan:
    """A run's fixed settings, recorded in ``run.json`` so that a resumed run is the same run."""

    partial: Path
    total: int
    meta: dict[str, Any]
    schema: pa.Schema  # of the parts: float32 rows, quantized only when assembled
    options: EmbedOptions
    row_format: RowFormat
    extra: dict[str, str]  # the row format's own metadata (a vocabulary), kept with the output
    embedded: int = 0  # inputs in chunks on disk, for the message of a failed write


@dataclass
class _ChunkSizer:
    """How many inputs the next chunk takes: ``fixed`` when the caller chose a size; otherwise as
    many as the last chunk's pace gets through in ``seconds``, starting from ``smallest`` and growing
    at most :data:`_CHUNK_GROWTH` times a chunk (the first includes warm-up), up to ``largest``."""

    largest: int
    smallest: int
    seconds: float
    fixed: int | None = None
    size: int = 0
    biggest: int = 0

    def __post_init__(self) -> None:
        self.size = self.fixed or min(self.smallest, self.largest)

    def record(self, items: int, elapsed: float) -> None:
        self.biggest = max(self.biggest, items)
        if self.fixed or items < self.size or elapsed <= 0:  # a short last chunk says little of the pace
            return
        paced = int(items / elapsed * self.seconds)
        self.size = max(1, min(self.largest, _CHUNK_GROWTH * self.size, max(self.smallest, paced)))


def _sizer(tower: str | None, batch_size: int, num_workers: int, chunk_size: int | None,
           chunk_seconds: float | None) -> _ChunkSizer:
    """The chunk sizes of a run: text up to 4096 inputs a chunk; images and audio up to 512, or 8
    batches per decode worker when that is more (each chunk starts its workers afresh), and at least
    one batch per worker."""
    if chunk_size is not None and chunk_size < 1:
        raise ZooError(f"--chunk-size must be at least 1, got {chunk_size}")
    if chunk_seconds is not None and chunk_seconds <= 0:
        raise ZooError(f"--chunk-seconds must be more than 0, got {chunk_seconds}")
    if tower == "text":
        return _ChunkSizer(DEFAULT_CHUNK_TEXT, batch_size, chunk_seconds or DEFAULT_CHUNK_SECONDS_TEXT, chunk_size)
    return _ChunkSizer(max(DEFAULT_CHUNK_MEDIA, 8 * batch_size * num_workers), batch_size * max(1, num_workers),
                       chunk_seconds or DEFAULT_CHUNK_SECONDS_MEDIA, chunk_size)


def _plan_run(model: Model, inputs: InputSource, output: Path, options: EmbedOptions) -> _Plan:
    """Create ``OUT.partial/run.json``, or check that the interrupted run there had these settings.
    Chunk sizes are no setting: each chunk on disk says which inputs it holds."""

    id_type, kept = _column_types(inputs)  # a repeated id is refused before anything is written
    partial = output.with_name(output.name + ".partial")
    run_file = partial / "run.json"
    previous = json.loads(run_file.read_text()) if run_file.is_file() else None
    total = len(inputs)
    meta = embedding_provenance(model.spec, model.files, options=options, runtime=model.runtime)
    run = {"inputs": inputs.description, "fingerprint": inputs.fingerprint(), "total": total,
           **{k: meta[k] for k in ("model", "sha256", "embed_dim", "runtime")}, "options": options.provenance()}
    if previous is None:
        partial.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_file, run)
    elif previous != run:
        changed = sorted(k for k in run if previous.get(k) != run[k])
        raise ZooError(f"{partial} holds an interrupted run with other settings ({', '.join(changed)}); "
                       f"delete it to start over, or run the same command to resume")
    row_format = model.row_format
    extra = row_format.metadata(model.encoder)
    schema = _schema(options.float_dim, id_type, meta, kept=kept, row_format=row_format, extra=extra)
    return _Plan(partial, total, meta, schema, options, row_format, extra)


def _column_types(inputs: InputSource) -> tuple[pa.DataType, list[pa.Field]]:
    """The type of the ids and of each kept column, read from every row (a parquet file's own
    schema where it has one) before anything is written: a column of mixed types, or a repeated or
    empty id (which would make rows ambiguous), is refused by name."""
    import pyarrow as pa

    if not inputs.id_column and not inputs.keep:
        return (pa.string() if inputs.kind == "files" else pa.int64()), []
    seen: set[Any] = set()
    values: list[list[Any]] = [[] for _ in range(1 + len(inputs.keep))]
    for position, (item_id, _, kept) in enumerate(inputs.rows()):
        if inputs.id_column:
            if item_id is None or item_id in seen:
                what = "empty" if item_id is None else f"{item_id!r} again"
                raise ZooError(f"{inputs.description}: row {position} has id {what} in column "
                               f"{inputs.id_column!r}; ids must be unique: choose another --id-column")
            seen.add(item_id)
        for column, value in zip(values, (item_id, *kept)):
            column.append(value)
    names = [inputs.id_column or "id", *inputs.keep]
    declared = _declared_types(inputs, names)
    types = [declared.get(name) or _one_type(name, column, inputs) for name, column in zip(names, values)]
    return (types[0] if inputs.id_column else pa.int64()), [pa.field(n, t) for n, t in zip(inputs.keep, types[1:])]


def _declared_types(inputs: InputSource, names: list[str]) -> dict[str, pa.DataType]:
    """The types a parquet input declares for ``names`` (CSV and JSONL declare none)."""
    if inputs.kind != "table" or not inputs.path.lower().endswith(".parquet"):
        return {}
    import pyarrow.parquet as pq

    schema = pq.read_schema(inputs.path)
    return {name: schema.field(name).type for name in names if name in schema.names}


def _one_type(name: str, values: list[Any], inputs: InputSource) -> pa.DataType:
    """The one arrow type of a column's values (null when all are empty), or a named refusal."""
    import pyarrow as pa

    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ZooError(f"{inputs.description}: column {name!r} holds values of more than one type ({exc}); "
                       "convert it to one type in the table, or keep another column") from None


def _part_path(plan: _Plan, start: int) -> Path:
    return plan.partial / f"part-{start:012d}.parquet"


def _parts_on_disk(plan: _Plan) -> dict[int, tuple[int, str]]:
    """The chunks an interrupted run wrote: ``{first input's position: (inputs it covers, their
    content digest)}``. Files of the earlier layout (chunks numbered, not placed) are left out, so
    they are recomputed."""
    import pyarrow.parquet as pq

    parts = {}
    for path in plan.partial.glob("part-" + "[0-9]" * 12 + ".parquet"):
        try:
            metadata = pq.read_schema(path).metadata
            count = int(metadata.get(b"count", b"0"))
        except (OSError, ValueError):  # an unreadable part is recomputed
            continue
        if count > 0:
            parts[int(path.stem.removeprefix("part-"))] = (count, metadata.get(b"digest", b"").decode())
    return parts


def _write_chunk(model: Model, chunk: list[tuple[Any, Any, tuple[Any, ...]]], hashes: list[str], part: Path,
                 plan: _Plan, **featurize: Any) -> None:
    """Embed one chunk and write it, with its skipped items, input count and content digest, as one
    parquet part."""
    import pyarrow.parquet as pq

    ids = [i for i, _, _ in chunk]
    float_options = dataclasses.replace(plan.options, precision="float32")  # quantized when assembled
    with warnings.catch_warnings():  # skipped items are reported once, at the end, by id
        warnings.filterwarnings("ignore", message="featurize skipped", category=RuntimeWarning)
        rows, report = model.featurize_with_report([x for _, x, _ in chunk], progress=False, options=float_options,
                                                   **featurize)
    kept = [[chunk[i][2][c] for i in report.kept] for c in range(len(_kept_fields(plan.schema, plan.row_format)))]
    table = _table([ids[i] for i in report.kept], rows, [hashes[i] for i in report.kept], plan.schema, kept,
                   row_format=plan.row_format)  # numpy rows: return_tensors is left at "np"
    skipped = json.dumps([[ids[i], why] for i, why in report.skipped], default=str)
    table = table.replace_schema_metadata({**table.schema.metadata, b"skipped": skipped.encode(),
                                           b"count": str(len(chunk)).encode(),
                                           b"digest": chunk_digest(ids, hashes).encode()})
    with atomic_path(part) as tmp:
        pq.write_table(table, tmp)


def embed_to_file(
    model: Model,
    inputs: InputSource,
    output: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    chunk_size: int | None = None,
    chunk_seconds: float | None = None,
    on_error: str = "raise",
    num_workers: int = 0,
    progress: bool = True,
    options: EmbedOptions | None = None,
    calibration: np.ndarray | None = None,
) -> EmbedSummary:
    """Embed ``inputs`` into ``output`` (``.parquet`` or ``.npy``), resuming an interrupted run.

    Each resumable chunk takes about ``chunk_seconds`` of work at the run's measured pace (default
    2 for text, 5 for images and audio, whose chunks restart their decode workers), so a kill loses
    seconds whatever the model's speed; at most 4096 inputs for text models (the window
    texts are sorted by length in) and 512 for the others, or 8 batches per decode worker when
    that is more. ``chunk_size`` fixes the number of inputs per chunk instead. A resumed run keeps
    the chunks on disk whose inputs are unchanged, whatever sizes they have.

    ``options`` (from :meth:`zoo.Model.embed_options`: tower, pooling, normalisation, prompt,
    layers, truncation, precision, role; default: the model's own, with the ``document`` role for a
    model that runs roles differently) are recorded in the output's metadata.
    A quantized precision is applied when the parts are assembled, so int8 / uint8 buckets come from
    every row of the output (or from the float embeddings ``calibration``), as ``quantize_embeddings``
    would bucket the whole matrix.
    """
    output = check_embedding_output(output, inputs)
    row_format = model.row_format
    if output.suffix not in row_format.suffixes:
        raise ZooError(f"-o {output}: {model.name} gives {row_format.description}, which zoo embed writes "
                       f"to a {' or '.join(row_format.suffixes)} file")
    taken = [name for name in inputs.keep if name in row_format.columns]
    if taken:
        raise ZooError(f"--keep-columns {taken[0]!r}: {model.name}'s rows are written as the column(s) "
                       f"{', '.join(row_format.columns)}; rename that column in the table")
    began = time.perf_counter()
    options = options or model.embed_options(role=model.search_role("document"))
    sizer = _sizer(options.tower, batch_size, num_workers, chunk_size, chunk_seconds)
    with _exclusive(output):
        # on_error is not a setting of the run: a run that stopped at a bad input resumes with --skip-errors
        plan = _plan_run(model, inputs, output, options)
        with _kept_on_disk_error(plan, output):
            parts, reused = _embed_chunks(model, inputs, plan, sizer, progress=progress, batch_size=batch_size,
                                          on_error=on_error, num_workers=num_workers)
            return _finish(plan, output, parts, reused, sizer.biggest, began, skip_allowed=on_error == "skip",
                           calibration=calibration)


def _embed_chunks(model: Model, inputs: InputSource, plan: _Plan, sizer: _ChunkSizer, *, progress: bool,
                  **featurize: Any) -> tuple[list[tuple[Path, int]], tuple[int, int]]:
    """Walk the inputs chunk by chunk: a chunk on disk that starts here and still matches its inputs
    is kept; anything else is embedded, in a chunk that ends where the next one on disk begins.
    Returns the chunks covering the inputs, in order, and how many chunks and inputs were kept."""
    from tqdm.auto import tqdm

    on_disk = _parts_on_disk(plan)
    stream = inputs.rows()
    parts: list[tuple[Path, int]] = []
    reused_chunks = reused_inputs = position = 0
    with tqdm(total=plan.total, desc=f"embed {model.name}", unit="item", disable=not progress, smoothing=0.1) as bar:
        while position < plan.total:
            held = on_disk.pop(position, None)
            if held is not None:
                chunk = list(itertools.islice(stream, held[0]))
            else:
                following = min((start for start in on_disk if start > position), default=plan.total)
                chunk = list(itertools.islice(stream, min(sizer.size, following - position)))
            if not chunk:  # the inputs ended early: _finish counts and says so
                break
            part = _part_path(plan, position)
            started = time.perf_counter()
            # Each input's content is hashed once: to match a chunk on disk, and for the rows written.
            hashes = [content_hash(x, inputs.hash_kind) for _, x, _ in chunk]
            if held is not None and held[1] == chunk_digest([i for i, _, _ in chunk], hashes):
                reused_chunks, reused_inputs = reused_chunks + 1, reused_inputs + len(chunk)
            else:
                _write_chunk(model, chunk, hashes, part, plan, **featurize)
                sizer.record(len(chunk), time.perf_counter() - started)
            parts.append((part, len(chunk)))
            position += len(chunk)
            plan.embedded = position
            bar.update(len(chunk))
    for start in on_disk:  # chunks of an earlier run that no longer line up
        _part_path(plan, start).unlink(missing_ok=True)
    if position == plan.total and next(stream, None) is not None:
        raise ZooError(f"counted {plan.total} inputs but there are more now: the inputs grew during the run; "
                       f"delete {plan.partial} and run again")
    return parts, (reused_chunks, reused_inputs)


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
        raise ZooError(f"could not write {output}: {exc.strerror or exc}; the {plan.embedded} of {plan.total} "
                       f"inputs already embedded are kept in {plan.partial}: free space and run the same command "
                       "to finish") from exc


def _finish(plan: _Plan, output: Path, parts: list[tuple[Path, int]], reused: tuple[int, int], biggest: int,
            began: float, *, skip_allowed: bool, calibration: np.ndarray | None) -> EmbedSummary:
    """Assemble the parts into ``output``, list skipped inputs beside it, and clear the staging folder."""
    import pyarrow.parquet as pq

    covered = sum(count for _, count in parts)
    if covered != plan.total:
        raise ZooError(f"counted {plan.total} inputs but read {covered}: the inputs changed during the run; "
                       f"delete {plan.partial} and run again")
    skipped: list[tuple[Any, str]] = []  # each part records its own, this run's or an earlier one's
    for part, _ in parts:
        skipped += [tuple(x) for x in json.loads(pq.read_schema(part).metadata.get(b"skipped", b"[]"))]
    if skipped and not skip_allowed:  # chunks an earlier --skip-errors run wrote
        raise ZooError(f"input {skipped[0][0]}: {skipped[0][1]}; an earlier run of this command skipped "
                       f"{len(skipped)} inputs: pass --skip-errors to finish with them skipped")
    rows = _assemble([part for part, _ in parts], output, plan, calibration)
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
    return EmbedSummary(output, rows, skipped, skipped_file if skipped else None, reused[0], len(parts), biggest,
                        time.perf_counter() - began, inputs_done_before=reused[1])


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
    kept = _kept_fields(plan.schema, plan.row_format)
    schema = _schema(plan.options.width, plan.schema.field("id").type, meta, precision, kept,
                     row_format=plan.row_format, extra=plan.extra)
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
                        table = _table(table.column("id").to_pylist(), rows_of_part,
                                       table.column("content_sha256").to_pylist(), schema,
                                       [table.column(field.name) for field in kept], row_format=plan.row_format)
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
    if low is None or high is None:
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
