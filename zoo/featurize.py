"""The featurize engine every adapter shares: decode, batch, run frozen, assemble (N, D) float32.

An adapter supplies three pieces (see :class:`zoo.Adapter`): a ``decoder`` for one item (from its
modality), ``plan_batches`` (how decoded items group into model inputs; text sorts by length), and
``encode_batch`` (one forward pass to a ``(B, D)`` tensor). Everything else lives here, once: input
validation with the failing index, ``on_error="skip"`` bookkeeping, ``eval()`` plus
``torch.inference_mode()``, normalisation, float32 output in input order, progress, empty input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .adapter import Adapter

OnError = Literal["raise", "skip"]
# Show a progress bar by default only when there is enough work for it to matter.
PROGRESS_MIN_ITEMS = 256


@dataclass
class FeaturizeReport:
    """What the last featurize call did: which input rows came back, which were skipped and why."""

    total: int = 0
    kept: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def skipped_indices(self) -> list[int]:
        return [i for i, _ in self.skipped]


def decode_items(
    items: Sequence[Any], decode: Callable[[Any], Any], on_error: OnError, report: FeaturizeReport
) -> tuple[list[int], list[Any]]:
    """Decode every item; an error names its index, or with ``on_error="skip"`` is recorded."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    indices: list[int] = []
    decoded: list[Any] = []
    for i, item in enumerate(items):
        try:
            value = decode(item)
        except InputError as exc:
            error: InputError = InputError(i, exc.reason, item) if exc.index != i else exc
        except (TypeError, ValueError, OSError, EOFError) as exc:
            error = InputError(i, f"{type(exc).__name__}: {exc}", item)
        else:
            indices.append(i)
            decoded.append(value)
            continue
        if on_error == "raise":
            raise error
        report.skipped.append((i, error.reason))
    return indices, decoded


def run_featurize(
    adapter: Adapter,
    inputs: Iterable[Any],
    *,
    encode: Callable[[Any], torch.Tensor],
    dim: int,
    decode: Callable[[Any], Any] | None = None,
    plan: Callable[[Sequence[Any], int], Iterable[tuple[list[int], Any]]] | None = None,
    batch_size: int,
    normalize: bool,
    return_tensors: Literal["np", "pt"],
    progress: bool | None,
    on_error: OnError,
    desc: str = "featurize",
    num_workers: int = 0,
) -> np.ndarray | torch.Tensor:
    """Run ``encode`` over ``inputs`` batch by batch into an ``(N, dim)`` float32 array.

    ``decode`` and ``plan`` default to the adapter's ``decoder()`` and ``plan_batches``. See
    :meth:`zoo.Adapter.featurize` for the contract; classifier outputs and the text tower of an
    image-text model reuse the same loop.
    """
    import numpy as np
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be 'np' or 'pt', not {return_tensors!r}")
    if isinstance(inputs, (str, bytes)):
        raise TypeError("featurize takes a sequence of items; wrap a single item in a list: [item]")
    items = list(inputs)
    report = FeaturizeReport(total=len(items))
    adapter.last_report = report
    from .allocator import keep_freed_memory

    with keep_freed_memory(enabled=str(adapter.device).startswith("cpu")):
        if plan is None and (num_workers > 0 or not adapter.sorts_by_size):
            # Decode batch by batch (in workers if asked) so memory holds one batch of decoded items,
            # not the whole input: images and other inputs batched in input order.
            return _run_streaming(adapter, items, encode=encode, dim=dim, decode=decode or adapter.decoder(),
                                  batch_size=batch_size, normalize=normalize, return_tensors=return_tensors,
                                  progress=progress, on_error=on_error, desc=desc, num_workers=num_workers,
                                  report=report)
        indices, decoded = decode_items(items, decode or adapter.decoder(), on_error, report)
        out = np.zeros((len(decoded), dim), dtype=np.float32)
        batches = (plan or adapter.plan_batches)(decoded, batch_size) if decoded else ()
        adapter.model.eval()
        with torch.inference_mode(), _progress_bar(adapter, len(decoded), progress, desc) as bar:
            for positions, batch in batches:
                out[positions] = _rows(adapter, encode(batch), len(positions), dim, normalize)
                bar.update(len(positions))
        report.kept = indices
        return _finish(out, report, return_tensors)


def _progress_bar(adapter: Adapter, total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar over ``total`` items; ``progress=None`` shows it only for long inputs."""
    from tqdm.auto import tqdm

    show = progress if progress is not None else total >= PROGRESS_MIN_ITEMS
    return tqdm(total=total, desc=f"{desc} {adapter.name}", unit="item", disable=not show)


def _rows(adapter: Adapter, emb: torch.Tensor, n: int, dim: int, normalize: bool) -> np.ndarray:
    """One batch's output, checked, as float32 numpy rows (normalised if asked)."""
    import torch

    if emb.shape != (n, dim):
        raise RuntimeError(f"{type(adapter).__name__} returned shape {tuple(emb.shape)} "
                           f"for {n} items; expected ({n}, {dim})")
    emb = emb.float()  # first: numpy has no bfloat16
    if normalize:
        emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
    return emb.cpu().numpy()


def _finish(out: np.ndarray, report: FeaturizeReport, return_tensors: Literal["np", "pt"]) -> np.ndarray | torch.Tensor:
    """Warn about skipped items and hand the rows back in the requested form."""
    if report.skipped:
        shown = ", ".join(f"{i} ({why})" for i, why in report.skipped[:5])
        more = f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""
        warnings.warn(f"featurize skipped {len(report.skipped)} of {report.total} inputs: {shown}{more}; "
                      "see model.last_report", RuntimeWarning, stacklevel=4)
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(out)
    return out


class _DecodeCollate:
    """Runs in DataLoader workers: decode a batch of items and collate it, recording bad items."""

    def __init__(self, adapter: Adapter, items: list[Any], decode: Callable[[Any], Any]) -> None:
        self.adapter, self.items, self.decode = adapter, items, decode

    def __call__(self, positions: list[int]) -> tuple[list[int], Any, list[tuple[int, str]]]:
        report = FeaturizeReport()
        kept, decoded = decode_items([self.items[i] for i in positions], self.decode, "skip", report)
        errors = [(positions[i], why) for i, why in report.skipped]
        batch = self.adapter.collate(decoded) if decoded else None
        return [positions[i] for i in kept], batch, errors


def _run_streaming(adapter: Adapter, items: list[Any], *, encode: Callable[[Any], torch.Tensor], dim: int,
                   decode: Callable[[Any], Any], batch_size: int, normalize: bool,
                   return_tensors: Literal["np", "pt"], progress: bool | None, on_error: OnError, desc: str,
                   num_workers: int, report: FeaturizeReport) -> np.ndarray | torch.Tensor:
    """Decode and preprocess batch by batch, in input order; with ``num_workers`` > 0 in that many
    processes, overlapping the model running here."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    out = np.zeros((len(items), dim), dtype=np.float32)
    kept = np.zeros(len(items), dtype=bool)
    loader = DataLoader(range(len(items)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_DecodeCollate(adapter, items, decode),
                        prefetch_factor=4 if num_workers else None)
    adapter.model.eval()
    with torch.inference_mode(), _progress_bar(adapter, len(items), progress, desc) as bar:
        for positions, batch, errors in loader:
            if errors and on_error == "raise":
                index, why = errors[0]
                raise InputError(index, why, items[index])
            report.skipped += errors
            if positions:
                out[positions] = _rows(adapter, encode(batch), len(positions), dim, normalize)
                kept[positions] = True
            bar.update(len(positions) + len(errors))
    report.kept = np.flatnonzero(kept).tolist()
    report.skipped.sort()
    return _finish(out[kept], report, return_tensors)
