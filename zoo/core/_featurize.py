"""The featurize engine every encoder shares: decode, batch, run frozen, assemble (N, D) float32
(or the rows of the model kind's :class:`~zoo.core._rows.RowFormat`).

An encoder supplies three pieces (see :class:`zoo.Encoder`): ``decode`` for one item (its
modality's decoder), ``plan_batches`` (how decoded items group into model inputs; text sorts by length), and
``encode_batch`` (one forward pass to a ``(B, D)`` tensor). Everything else lives here, once: input
validation with the failing index, ``on_error="skip"`` bookkeeping, ``eval()`` plus
``torch.inference_mode()``, normalisation, float32 output in input order, progress, empty input.

An encoder may also cut a long decoded input into windows (:meth:`zoo.Encoder.windows`): each
window is one model input, batched like any other, and the input's row is the mean of its windows'
rows weighted by their lengths, so the model's memory is bounded by the window, not the input.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from zoo.errors import InputError, InputWarning, Unreadable, is_item_error

from ._allocator import keep_freed_memory
from ._encoder import Encoder, FinishBatch
from ._rows import RowBuffer

if TYPE_CHECKING:
    import numpy as np
    import torch


OnError = Literal["raise", "skip"]
# Show a progress bar by default only when there is enough work for it to matter.
PROGRESS_MIN_ITEMS = 256
# An encoder's ``windows``: a decoded item -> [(window, weight)], or None to keep it whole.
Windows = Callable[[Any], "list[tuple[Any, float]] | None"]


@dataclass
class FeaturizeReport:
    """What a featurize call did: which input rows came back, which were skipped and why."""

    total: int = 0
    kept: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    #: inputs embedded with a decoder's :class:`~zoo.errors.InputWarning` (index, message)
    warned: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Decoded:
    """Decoded model inputs: ``parts[k]`` belongs to input ``indices[k]``. An input the encoder
    cut into windows has several parts, each with its ``weights[k]`` (None: a whole input)."""

    indices: list[int] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)
    weights: list[float | None] = field(default_factory=list)

    def add(self, index: int, value: Any, windows: Windows | None) -> None:
        cut: Sequence[tuple[Any, float | None]] | None = windows(value) if windows is not None else None
        for part, weight in cut or [(value, None)]:
            self.indices.append(index)
            self.parts.append(part)
            self.weights.append(weight)


def decode_items(items: Sequence[Any], decode: Callable[[Any], Any], on_error: OnError, report: FeaturizeReport,
                 windows: Windows | None = None) -> Decoded:
    """Decode every item (cut into ``windows`` where the encoder asks); an error names its index,
    or with ``on_error="skip"`` is recorded."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    decoded = Decoded()
    for i, item in enumerate(items):
        try:
            if isinstance(item, Unreadable):
                raise InputError(i, item.reason)
            value = _decode_noting(decode, item, i, report)
        except InputError as exc:
            error: InputError = InputError(i, exc.reason, item) if exc.index != i else exc
        except Exception as exc:  # whatever a decoder raises for one bad item (is_item_error)
            if not is_item_error(exc):
                raise
            error = InputError(i, f"{type(exc).__name__}: {exc}", item)
        else:
            decoded.add(i, value, windows)
            continue
        if on_error == "raise":
            raise error
        report.skipped.append((i, error.reason))
    return decoded


def _decode_noting(decode: Callable[[Any], Any], item: Any, index: int, report: FeaturizeReport) -> Any:
    """``decode(item)``, recording the decoder's :class:`InputWarning` s against ``index`` (other
    warnings pass through as they were)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        value = decode(item)
    for w in caught:
        if issubclass(w.category, InputWarning):
            report.warned.append((index, str(w.message)))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value


@dataclass
class _Output:
    """Which inputs hold a row, which were refused and why, around the format's buffer of rows."""

    items: list[Any]
    rows: RowBuffer
    on_error: OnError
    report: FeaturizeReport
    filled: np.ndarray = field(init=False)
    bad: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        import numpy as np

        self.filled = np.zeros(len(self.items), dtype=bool)

    def store(self, encoder: Encoder, positions: list[int], emb: torch.Tensor,
              weights: Sequence[float | None] | None = None) -> None:
        """One batch's output into its rows. A row that is not finite (a waveform of amplitude
        1e30, an overflow in float16) is that input's error."""
        import numpy as np

        if len(emb) != len(positions):
            raise RuntimeError(f"{type(encoder).__name__} returned {len(emb)} rows for {len(positions)} items")
        finite = self.rows.put(positions, emb, weights or [None] * len(positions))
        for row in np.flatnonzero(~finite):
            self._refuse(positions[row])
        self.filled[[positions[j] for j in np.flatnonzero(finite)]] = True

    def drop(self, positions: list[int], weights: list[float | None], failed: list[tuple[int, str]]
             ) -> tuple[list[int], list[float | None]]:
        """A batch's rows without those its encoder could not finish (``failed``: (row, reason)),
        each raised or recorded as a bad input."""
        for row, reason in failed:
            index = positions[row]
            if self.on_error == "raise":
                raise InputError(index, reason, self.items[index])
            if index not in self.bad:  # an input cut into windows is skipped once, whole
                self.bad.add(index)
                self.report.skipped.append((index, reason))
        gone = {row for row, _ in failed}
        kept = [row for row in range(len(positions)) if row not in gone]
        return [positions[row] for row in kept], [weights[row] for row in kept]

    def _refuse(self, index: int) -> None:
        if index in self.bad:
            return
        reason = "the model's output for it is not finite (NaN or infinity); check the input's values"
        if self.on_error == "raise":
            raise InputError(index, reason, self.items[index])
        self.bad.add(index)
        self.report.skipped.append((index, reason))

    def finish(self, return_tensors: Literal["np", "pt"]) -> tuple[Any, FeaturizeReport]:
        """Warn about skipped items and hand the kept rows back in the requested form."""
        import numpy as np

        self.filled[list(self.bad)] = False
        report = self.report
        report.kept = np.flatnonzero(self.filled).tolist()
        report.skipped.sort()
        report.warned.sort()
        if report.warned:
            shown = ", ".join(f"{i} ({why})" for i, why in report.warned[:3])
            warnings.warn(f"{len(report.warned)} of {report.total} inputs were embedded with a warning: {shown}; "
                          "see model.last_report.warned", InputWarning, stacklevel=6)
        if report.skipped:
            shown = ", ".join(f"{i} ({why})" for i, why in report.skipped[:5])
            more = f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
            warnings.warn(f"featurize skipped {len(report.skipped)} of {report.total} inputs: {shown}{more}; "
                          "see model.last_report", RuntimeWarning, stacklevel=6)
        return self.rows.result(self.filled, return_tensors), report


def run_featurize(
    encoder: Encoder,
    inputs: Iterable[Any],
    *,
    encode: Callable[[Any], torch.Tensor],
    buffer: Callable[[int], RowBuffer],
    decode: Callable[[Any], Any],
    batch_size: int,
    return_tensors: Literal["np", "pt"],
    progress: bool | None,
    on_error: OnError,
    finish: FinishBatch | None = None,
    desc: str = "featurize",
    num_workers: int = 0,
) -> tuple[Any, FeaturizeReport]:
    """Run ``encode`` over ``inputs`` batch by batch into the rows of ``buffer(len(inputs))``: a
    :class:`~zoo.core._rows.RowFormat`'s (``(N, dim)`` float32 for dense rows, a sparse matrix...).

    The encoder's ``plan_batches`` groups the decoded items and its ``windows`` cuts long ones;
    ``finish`` (a :class:`~zoo.core._encoder.DeviceStage`'s) completes each batch on the device.
    Returns the rows and the report of what was kept and skipped. See :meth:`zoo.Model.featurize`
    for the contract; classifier outputs and reranker scores reuse the same loop.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be 'np' or 'pt', not {return_tensors!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if isinstance(inputs, (str, bytes)):
        raise TypeError("featurize takes a sequence of items; wrap a single item in a list: [item]")
    items = list(inputs)
    windows = encoder.windows if type(encoder).windows is not Encoder.windows else None
    output = _Output(items, buffer(len(items)), on_error, FeaturizeReport(total=len(items)))
    encoder.model.eval()
    with keep_freed_memory(enabled=str(encoder.device).startswith("cpu")), torch.inference_mode(), \
            _progress_bar(encoder, len(items), progress, desc) as bar:
        if num_workers > 0 or not _decodes_all_first(encoder):
            # Decode batch by batch (in workers if asked) so memory holds one batch of decoded items,
            # not the whole input: images and other inputs batched in input order.
            batches = _streamed_batches(encoder, items, decode, batch_size, num_workers, output, windows, finish)
        else:
            batches = _planned_batches(encoder, items, decode, batch_size, output, windows)
        for positions, batch, weights, advance in batches:
            if positions and finish is not None:
                batch, failed = finish(batch)
                if failed:
                    positions, weights = output.drop(positions, weights, failed)
            if positions:
                output.store(encoder, positions, encode(batch), weights)
            bar.update(advance)
    return output.finish(return_tensors)


def _decodes_all_first(encoder: Encoder) -> bool:
    """Whether the encoder's batching looks at every decoded item before the first batch (to sort
    by length), so the engine decodes the whole input first; otherwise items decode batch by batch,
    in input order, and memory holds one batch."""
    cls = type(encoder)
    return cls.plan_batches is not Encoder.plan_batches or cls.lengths is not Encoder.lengths


def _planned_batches(encoder: Encoder, items: list[Any], decode: Callable[[Any], Any], batch_size: int,
                     output: _Output, windows: Windows | None
                     ) -> Iterator[tuple[list[int], Any, list[float | None], int]]:
    """Decode everything first, then batch as the encoder plans (text: by length). Yields
    ``(positions, batch, weights, inputs finished)``."""
    decoded = decode_items(items, decode, output.on_error, output.report, windows)
    remaining = Counter(decoded.indices)  # parts still to run, per input
    yield [], None, [], len(items) - len(remaining)  # the skipped ones
    planned = encoder.plan_batches(decoded.parts, batch_size) if decoded.parts else ()
    for positions, batch in planned:
        indices = [decoded.indices[p] for p in positions]
        remaining.subtract(indices)
        finished = sum(1 for i in set(indices) if remaining[i] == 0)
        yield indices, batch, [decoded.weights[p] for p in positions], finished


def _progress_bar(encoder: Encoder, total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar over ``total`` items; ``progress=None`` shows it only for long inputs."""
    from tqdm.auto import tqdm

    show = progress if progress is not None else total >= PROGRESS_MIN_ITEMS
    return tqdm(total=total, desc=f"{desc} {encoder.name}", unit="item", disable=not show)


class _DecodeCollate:
    """Runs in DataLoader workers: decode a batch of items, cut long ones into windows, and collate
    them into model batches of at most ``batch_size`` parts, recording bad items."""

    def __init__(self, encoder: Encoder, items: list[Any], decode: Callable[[Any], Any], batch_size: int,
                 windows: Windows | None) -> None:
        self.encoder, self.items, self.decode = encoder, items, decode
        self.batch_size, self.windows = batch_size, windows

    def __call__(self, positions: list[int]) -> tuple[list[tuple[list[int], Any, list[float | None]]], FeaturizeReport]:
        report = FeaturizeReport()
        decoded = decode_items([self.items[i] for i in positions], self.decode, "skip", report, self.windows)
        report.skipped = [(positions[i], why) for i, why in report.skipped]
        report.warned = [(positions[i], why) for i, why in report.warned]
        batches = []
        for start in range(0, len(decoded.parts), self.batch_size):
            part = slice(start, start + self.batch_size)
            batches.append(([positions[i] for i in decoded.indices[part]],
                            self.encoder.collate(decoded.parts[part]), decoded.weights[part]))
        return batches, report


def _streamed_batches(encoder: Encoder, items: list[Any], decode: Callable[[Any], Any], batch_size: int,
                      num_workers: int, output: _Output, windows: Windows | None, finish: FinishBatch | None
                      ) -> Iterator[tuple[list[int], Any, list[float | None], int]]:
    """Decode and collate batch by batch, in input order; with ``num_workers`` > 0 in that many
    processes, overlapping the model running here. Yields ``(positions, batch, weights, inputs
    finished)``; bad items are raised or recorded as they come."""
    from torch.utils.data import DataLoader

    # Any sequence serves as a map-style dataset; torch's annotation asks for a Dataset subclass.
    loader: DataLoader[int] = DataLoader(range(len(items)),  # type: ignore[arg-type]
                                         batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=_DecodeCollate(encoder, items, decode, batch_size, windows),
                                         prefetch_factor=4 if num_workers else None)
    for start, (batches, notes) in zip(range(0, len(items), batch_size), loader):
        if notes.skipped and output.on_error == "raise":
            index, why = _first_error(finish, batches, notes.skipped[0])
            raise InputError(index, why, items[index])
        output.report.skipped += notes.skipped
        output.report.warned += notes.warned
        for positions, batch, weights in batches:
            yield positions, batch, weights, 0
        yield [], None, [], min(batch_size, len(items) - start)  # this loader batch's inputs are done


def _first_error(finish: FinishBatch | None, batches: list[tuple[list[int], Any, list[float | None]]],
                 first: tuple[int, str]) -> tuple[int, str]:
    """The bad input of a loader batch with the lowest index: ``first`` (the first the decode
    workers found) or one only the device stage's ``finish`` finds (a JPEG left for the GPU), so the
    error names the input it would name with every input decoded on the CPU."""
    errors = [first]
    if finish is not None:
        for positions, batch, _ in batches:
            errors += [(positions[row], why) for row, why in finish(batch)[1]]
    return min(errors)
