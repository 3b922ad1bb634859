"""Another runtime for a loaded model's frozen forward pass: ONNX Runtime or OpenVINO.

``zoo.load(name, runtime="onnx")`` (or ``ZOO_RUNTIME=onnx``) exports the adapter's own
``encode_batch`` (the forward pass and its pooling) from the verified weights already loaded, once
per pooling mode, to ``ZOO_HOME/compiled/<key>/``. The key is a hash of everything that shapes the
graph (:func:`export_key`: the weights' sha256, the resolved preprocessing, the dtype, and the
versions of zoo, the opset, torch, the backend library and the runtimes), so a change to any of
them exports again. Each export records its files' sha256 and the digest of the weights it was
traced from (:func:`parameters_sha256`, of the model as loaded, not of the files on disk), and is
checked against both whenever it is loaded: an export of other weights under the same name is made
again. Every session made on it is first compared with PyTorch on batches of other sizes and
padded lengths than the one it was traced with (a trace that baked in one length or one mask fails
here). A new export is checked before it is moved into place; a cached one that no longer matches
its record or fails the comparison is exported again: never trusted. The first export prints a
progress line on stderr.

Where ``ZOO_HOME`` (or its ``compiled/``) cannot be written, a valid export already there is still
used; a missing one is made in a temporary folder for this process, with a warning naming the
folder that could not be written.

For ONNX Runtime the graph then goes through its transformer optimizer where the adapter names a
model type (attention, layer-norm and GELU fusions); OpenVINO reads the plain graph. Featurize,
``zoo embed``, ``zoo serve`` and the rest run unchanged on top: only ``encode`` differs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import __version__
from zoo.errors import UnsupportedOptionError, ZooError, did_you_mean
from zoo.store._atomic import current_umask, write_json_atomic
from zoo.store._integrity import cached_sha256, sha256_file
from zoo.store._settings import default_runtime, zoo_home

if TYPE_CHECKING:
    import torch
    from filelock import FileLock

    from ._encoder import Encoder, ExportPlan

RUNTIMES = ("torch", "onnx", "openvino")
OPSET = 17
# Whatever the weights, a compiled encoder must give the rows PyTorch gives.
MIN_COSINE = 0.9999
_PLAIN, _FUSED = "model.onnx", "model.fused.onnx"


def resolve_runtime(runtime: str | None) -> str:
    """``runtime``, or ``$ZOO_RUNTIME``, or ``torch``; an unknown name is an error naming the choices."""
    name = (runtime or default_runtime()).strip().lower()
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}{did_you_mean(name, RUNTIMES)}; choose one of "
                         f"{', '.join(RUNTIMES)} (zoo.load(..., runtime=...) or ZOO_RUNTIME)")
    return name


@dataclass(frozen=True)
class Export:
    """An exported forward pass on disk: its graphs (the plain one, and for ONNX Runtime a fused
    one when the adapter names a model type the optimizer knows) and the graph's input names."""

    folder: Path
    inputs: tuple[str, ...]
    files: tuple[str, ...] = (_PLAIN,)

    def graph(self, runtime: str) -> Path:
        return self.folder / (_FUSED if runtime == "onnx" and _FUSED in self.files else _PLAIN)


class CompiledEncoder:
    """An encoder's ``encode_batch`` run by ONNX Runtime or OpenVINO, one session per pooling mode
    (made on first use, the default mode's at load time)."""

    def __init__(self, adapter: Encoder, runtime: str) -> None:
        self.adapter, self.runtime = adapter, runtime
        self._runners: dict[str | None, Callable[[Any], torch.Tensor]] = {}

    def forward(self, pool: str | None) -> Callable[[Any], torch.Tensor]:
        """``batch -> (B, D)`` float32 tensor for ``pool``, exported first if needed; every session
        made is checked against PyTorch first."""
        runner = self._runners.get(pool)
        if runner is None:
            runner = self._runners[pool] = ensure_export(self.adapter, pool, self.runtime)
        return runner


def compile_encoder(adapter: Encoder, runtime: str) -> CompiledEncoder | None:
    """``adapter``'s frozen forward pass on ``runtime``, exported and checked now rather than at
    the first featurize; None for ``torch``."""
    runtime = resolve_runtime(runtime)
    if runtime == "torch":
        return None
    if not str(adapter.device).startswith("cpu"):
        raise UnsupportedOptionError(f"runtime={runtime!r} runs on the CPU; {adapter.name} is on "
                                     f"{adapter.device}: load it with device='cpu', or keep runtime='torch'")
    if adapter.dtype is not None and str(adapter.dtype) != "torch.float32":
        raise UnsupportedOptionError(f"runtime={runtime!r} runs float32; {adapter.name} was loaded with "
                                     f"dtype={adapter.dtype}: drop dtype=, or keep runtime='torch'")
    import_runtime(runtime)
    compiled = CompiledEncoder(adapter, runtime)
    compiled.forward(adapter.resolve_pool(None))
    return compiled


def import_runtime(runtime: str) -> None:
    """Import what ``runtime`` needs (and the export needs), or say which extra installs it."""
    for module in ("onnx", "onnxruntime", *(("openvino",) if runtime == "openvino" else ())):
        try:
            __import__(module)
        except ImportError:
            raise ZooError(f"runtime={runtime!r} needs {module}: pip install 'zoo-models[{runtime}]'") from None


# -- export -------------------------------------------------------------------------------------


def export_key(adapter: Encoder, pool: str | None) -> dict[str, Any]:
    """What an export depends on; its hash names the export's folder. Everything that shapes the
    traced graph is here: the weights, the settings the spec resolved (preprocessing fixes an
    image graph's size), the dtype, and the versions of zoo, the exporter, the backend library that
    wrote the forward pass, and the runtimes."""
    import onnx
    import torch

    backend = type(adapter.model).__module__.split(".")[0]
    settings = {"preprocessing": dict(adapter.spec.preprocessing), "config": dict(adapter.spec.config)}
    return {"model": adapter.name, "weights_sha256": weights_sha256(adapter), "zoo": __version__, "opset": OPSET,
            "torch": torch.__version__, "onnx": onnx.__version__, "pool": pool, "dtype": str(adapter.dtype),
            "adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}",
            "backend": f"{backend} {getattr(sys.modules.get(backend), '__version__', '?')}",
            "settings": json.loads(json.dumps(settings, sort_keys=True, default=str)),
            "runtimes": _runtime_versions()}


def _runtime_versions() -> dict[str, str]:
    """The installed runtimes' versions, read from package metadata (importing OpenVINO is slow)."""
    from importlib import metadata

    versions = {}
    for package in ("onnxruntime", "openvino"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def weights_sha256(adapter: Encoder) -> dict[str, str]:
    """The pinned sha256 of the weights, or, for a model with no pins (a local folder), each
    file's own (memoised by size and mtime)."""
    if adapter.spec.sha256:
        return dict(adapter.spec.sha256)
    if adapter.files is None:
        raise UnsupportedOptionError(f"{adapter.name} was built in memory: there are no weight files to key an "
                                     "export by; save it and load the folder")
    return {name: cached_sha256(adapter.files.path(name)) for name in adapter.files.members()}


def parameters_sha256(module: torch.nn.Module) -> str:
    """sha256 of ``module``'s weights as loaded: every parameter's and buffer's name, dtype, shape
    and bytes, in state-dict order. It is what an export is traced from, whatever the files on disk
    say now (a file rewritten in place with its size and mtime kept fools the stat-keyed hash memo;
    a spec may pin some files and not the weights)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Job:
    """One export to find or make, and what it must match: the key that names its folder and the
    digest of the weights it must have been traced from."""

    adapter: Encoder
    pool: str | None
    runtime: str
    plan: ExportPlan
    key: dict[str, Any]
    weights: str

    def cached(self, folder: Path) -> Callable[[Any], torch.Tensor] | None:
        """A session on the export in ``folder`` if its record vouches for these weights and its
        files, and its rows are PyTorch's; None otherwise."""
        held = _trusted(folder, self.key, self.weights)
        if held is None:
            return None
        runner = _runner(held, self.runtime)
        return runner if parity(self.adapter, self.pool, runner, self.plan) >= MIN_COSINE else None

    def export(self, folder: Path, *, kept: bool = True) -> Callable[[Any], torch.Tensor]:
        """Trace (and fuse) into ``folder``, then check the export against PyTorch, saying so on
        stderr as it goes (the first export of a model takes tens of seconds); a session on it.
        ``kept``: whether the export is cached for later loads (said in the progress line)."""
        how = "once; cached after" if kept else "for this process only"
        with _steps(f"zoo: exporting {self.adapter.name} for runtime={self.runtime!r} ({how})",
                    ["trace", *(["fuse"] if self.plan.fusion is not None else []), "check"]) as step:
            export = _export(self.adapter, self.pool, self.plan, folder, self.key, self.weights, step)
            step("check")
            runner = _runner(export, self.runtime)
            worst = parity(self.adapter, self.pool, runner, self.plan)
        if worst < MIN_COSINE:
            raise ZooError(f"the {self.runtime} export of {self.adapter.name} (pool {self.pool!r}) does not give "
                           f"PyTorch's rows: lowest cosine {worst:.6f} < {MIN_COSINE}; load it with runtime='torch'")
        return runner


def ensure_export(adapter: Encoder, pool: str | None, runtime: str) -> Callable[[Any], torch.Tensor]:
    """A ``runtime`` session on the checked export of ``adapter``'s forward pass with ``pool``: the
    cached one when its record names these weights as loaded, its files still have the sha256 they
    were written with and its rows are PyTorch's; otherwise exported now, checked in a staging
    folder, then moved into place. Under a lock, so two processes export once and nobody reads a
    file being replaced. Where ``ZOO_HOME`` cannot be written, a valid export there is still used,
    and a missing one is made in a temporary folder for this process, with a warning."""
    key = export_key(adapter, pool)
    job = _Job(adapter, pool, runtime, adapter.export_plan(), key, parameters_sha256(adapter.model))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = zoo_home() / "compiled" / digest
    try:
        lock = _export_lock(digest)
    except OSError as exc:  # a read-only ZOO_HOME: nobody can replace the export, so it is read unlocked
        return job.cached(folder) or _export_elsewhere(job, zoo_home(), exc)
    try:
        return job.cached(folder) or _export_in_place(job, folder, digest)
    finally:
        lock.release()


def _export_lock(digest: str) -> FileLock:
    """The held lock of one export; OSError where ``ZOO_HOME/locks`` cannot be written."""
    from filelock import FileLock

    locks = zoo_home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    if not os.access(locks, os.W_OK):  # refused up front: a lock file that cannot be opened is not a wait
        code = errno.EROFS if os.statvfs(locks).f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(locks))
    lock = FileLock(str(locks / f"compiled-{digest}.lock"))
    lock.acquire()
    return lock


def _export_in_place(job: _Job, folder: Path, digest: str) -> Callable[[Any], torch.Tensor]:
    """Export into a staging folder beside ``folder`` and rename it into place (the caller holds
    the lock); into a temporary folder instead where ``compiled/`` cannot be written."""
    for stale in (folder, *folder.parent.glob(f".{digest}.*")):  # a failed check, or a killed export
        shutil.rmtree(stale, ignore_errors=True)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=folder.parent))
    except OSError as exc:  # a read-only compiled/ (or a file where the folder should be)
        return _export_elsewhere(job, folder.parent, exc)
    try:
        runner = job.export(staging)  # the session holds the graph: it outlives the rename
        staging.chmod(0o777 & ~current_umask())
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return runner


def _export_elsewhere(job: _Job, unwritable: Path, why: OSError) -> Callable[[Any], torch.Tensor]:
    """Export into a temporary folder, for this process only, saying which folder could not be
    written and how to keep exports; the folder is gone once the session holds the graph."""
    name = job.adapter.name
    try:
        scratch = Path(tempfile.mkdtemp(prefix="zoo-export-"))
    except OSError as exc:
        raise ZooError(f"cannot export {name} for runtime={job.runtime!r}: {unwritable} cannot be written ({why}) "
                       f"and neither can a temporary folder ({exc}); make {unwritable} writable, set ZOO_HOME to "
                       "a folder that is, or load it with runtime='torch'") from None
    warnings.warn(f"{unwritable} cannot be written ({why}): {name} is exported for this process only, in a "
                  f"temporary folder, and will be again at its next load; make {unwritable} writable, or set "
                  "ZOO_HOME to a folder that is, to keep exports", RuntimeWarning, stacklevel=2)
    try:
        return job.export(scratch, kept=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _trusted(folder: Path, key: dict[str, Any], weights: str) -> Export | None:
    """The export in ``folder`` if its record names this key and was traced from these weights
    (``weights``: :func:`parameters_sha256` of the model as loaded now), lists every file there,
    the plain graph among them, and each file still has its recorded sha256."""
    try:
        record = json.loads((folder / "export.json").read_text())
        recorded, inputs = dict(record["sha256"]), tuple(record["inputs"])
        present = {p.name for p in folder.iterdir()} - {"export.json"}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("key") != key or record.get("weights") != weights:
        return None
    if _PLAIN not in recorded or set(recorded) != present:
        return None
    if any(sha256_file(folder / name) != digest for name, digest in recorded.items()):
        return None
    return Export(folder, inputs, tuple(recorded))


def _export(adapter: Encoder, pool: str | None, plan: ExportPlan, folder: Path, key: dict[str, Any], weights: str,
            step: Callable[[str], None]) -> Export:
    """Trace and fuse into ``folder``, and record the graph's inputs, the weights it was traced
    from and each file's sha256."""
    import onnx

    step("trace")
    _onnx_export(adapter, pool, plan, folder / _PLAIN)
    # The exporter drops inputs the graph does not use (token_type_ids of some models): feed what it kept.
    inputs = tuple(i.name for i in onnx.load(str(folder / _PLAIN), load_external_data=False).graph.input)
    if plan.fusion is not None:
        step("fuse")
        _fuse(folder / _PLAIN, folder / _FUSED, plan.fusion)
    files = tuple(p.name for p in sorted(folder.iterdir()))
    write_json_atomic(folder / "export.json", {"key": key, "weights": weights, "inputs": list(inputs),
                                               "sha256": {name: sha256_file(folder / name) for name in files}})
    return Export(folder, inputs, files)


@contextlib.contextmanager
def _steps(what: str, names: list[str]) -> Iterator[Callable[[str], None]]:
    """A progress line on stderr (tqdm, as zoo's other long steps) for a few named steps: the
    block calls the function it gets with each step's name as the step begins."""
    from tqdm.auto import tqdm

    with tqdm(total=len(names), desc=what, bar_format="{desc}: {n_fmt}/{total_fmt}{postfix} [{elapsed}]",
              postfix=names[0], disable=False) as bar:
        def begin(name: str) -> None:
            step = names.index(name)
            if step != bar.n:  # the steps before this one are done
                bar.n = step
                bar.set_postfix_str(name)

        yield begin
        bar.n = len(names)
        bar.set_postfix_str("done")


class _Forward:
    """The traced function: named input tensors -> ``adapter.encode_batch(batch, pool)``."""

    def __init__(self, adapter: Encoder, pool: str | None, names: tuple[str, ...], mapping: bool) -> None:
        self.adapter, self.pool, self.names, self.mapping = adapter, pool, names, mapping

    def module(self) -> torch.nn.Module:
        import torch

        forward = self

        class Traced(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = forward.adapter.model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                batch = dict(zip(forward.names, tensors)) if forward.mapping else tensors[0]
                return forward.adapter.encode_batch(batch, pool=forward.pool).float()

        return Traced().eval()


def _onnx_export(adapter: Encoder, pool: str | None, plan: ExportPlan, path: Path) -> None:
    """TorchScript-trace ``encode_batch`` on the plan's first batch to ONNX with the batch (and,
    for token inputs, the sequence) dimension left free."""
    import torch

    example = plan.examples[0]
    mapping = isinstance(example, Mapping)
    names = tuple(example) if mapping else ("pixel_values",)
    tensors = tuple(example[n] for n in names) if mapping else (example,)
    axes = {n: ({0: "batch", 1: "sequence"} if mapping and t.dim() > 1 else {0: "batch"})
            for n, t in zip(names, tensors)}
    forward = _Forward(adapter, pool, names, mapping).module()
    with torch.inference_mode():  # what an adapter builds on first use (a folded copy) is built outside the trace
        forward(*tensors)
    with plan.context(), torch.no_grad(), warnings.catch_warnings():
        # The trace's warnings are about Python branches on shapes; parity() is the test of them.
        warnings.simplefilter("ignore")
        torch.onnx.export(forward, tensors, str(path), input_names=list(names),
                          output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def _fuse(plain: Path, fused: Path, fusion: dict[str, Any]) -> None:
    """ONNX Runtime's transformer optimizer: attention, embedding / skip layer-norm and GELU fusions."""
    from onnxruntime.transformers import optimizer

    with _quiet_logging("onnxruntime.transformers"):
        model = optimizer.optimize_model(str(plain), opt_level=1, **fusion)
    model.save_model_to_file(str(fused))


@contextlib.contextmanager
def _quiet_logging(name: str) -> Iterator[None]:
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def parity(adapter: Encoder, pool: str | None, run: Callable[[Any], torch.Tensor], plan: ExportPlan) -> float:
    """The lowest cosine between ``run`` and PyTorch's ``encode_batch`` on the adapter's check
    batches (other sizes and padded lengths than the traced one). A row of the wrong shape, not
    finite, or of another length (beyond 0.1%) counts as -1."""
    import torch

    worst = 1.0
    with torch.inference_mode():
        for batch in plan.examples[1:]:
            ours, theirs = run(batch), adapter.encode_batch(batch, pool=pool).float()
            if ours.shape != theirs.shape or not bool(torch.isfinite(ours).all()):
                return -1.0
            cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
            lengths = torch.linalg.vector_norm(ours, dim=-1) / torch.linalg.vector_norm(theirs, dim=-1).clamp(min=1e-12)
            cosine = torch.where((lengths - 1).abs() <= 1e-3, torch.nan_to_num(cosine, nan=-1.0), -1.0)
            worst = min(worst, float(cosine.min()))
    return worst


# -- running ------------------------------------------------------------------------------------


def _runner(export: Export, runtime: str) -> Callable[[Any], torch.Tensor]:
    """``batch -> (B, D)`` tensor through a session of ``runtime`` on ``export``'s graph."""
    import torch

    graph = export.graph(runtime)
    if runtime == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

        def run(arrays: dict[str, Any]) -> Any:
            return session.run(None, arrays)[0]
    else:
        import openvino

        # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise compute in bf16.
        compiled = openvino.Core().compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

        def run(arrays: dict[str, Any]) -> Any:
            return compiled(arrays)[0]

    def encode(batch: Any) -> torch.Tensor:
        tensors = batch if isinstance(batch, Mapping) else {export.inputs[0]: batch}
        return torch.from_numpy(run({name: tensors[name].numpy() for name in export.inputs}))

    return encode
