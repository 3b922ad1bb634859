"""Another runtime for a loaded model's frozen forward pass: ONNX Runtime or OpenVINO.

``zoo.load(name, runtime="onnx")`` (or ``ZOO_RUNTIME=onnx``) exports the adapter's own
``encode_batch`` (the forward pass and its pooling) from the verified weights already loaded, once
per pooling mode, to ``ZOO_HOME/compiled/<key>/``. The key is a hash of the weights' sha256, zoo's
version, the opset, the exporting torch's and the runtime's versions and the pooling mode, so an
upgrade of any of them exports again. Each export records its own sha256 and is checked against it
whenever it is loaded: a stale, partial or edited export is rebuilt, never trusted. Every session made
on an export is first compared with PyTorch on batches of other sizes and padded lengths than the
one it was traced with (a trace that baked in one length or one mask fails here).

For ONNX Runtime the graph then goes through its transformer optimizer where the adapter names a
model type (attention, layer-norm and GELU fusions); OpenVINO reads the plain graph. Featurize,
``zoo embed``, ``zoo serve`` and the rest run unchanged on top: only ``encode`` differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .atomic import write_json_atomic
from .errors import UnsupportedOptionError, ZooError, did_you_mean
from .integrity import cached_sha256, sha256_file
from .settings import default_runtime, zoo_home

if TYPE_CHECKING:
    import torch

    from .adapter import Adapter

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
    """An exported forward pass on disk: the plain graph, the fused one (ONNX Runtime only, when
    the adapter names a model type the optimizer knows) and the input names, in order."""

    folder: Path
    inputs: tuple[str, ...]

    def graph(self, runtime: str) -> Path:
        fused = self.folder / _FUSED
        return fused if runtime == "onnx" and fused.is_file() else self.folder / _PLAIN


class CompiledEncoder:
    """An adapter's ``encode_batch`` run by ONNX Runtime or OpenVINO, one session per pooling mode
    (made on first use, the default mode's at load time)."""

    def __init__(self, adapter: Adapter, runtime: str) -> None:
        self.adapter, self.runtime = adapter, runtime
        self._runners: dict[str | None, Callable[[Any], torch.Tensor]] = {}

    def encoder(self, pool: str | None) -> Callable[[Any], torch.Tensor]:
        """``batch -> (B, D)`` float32 tensor for ``pool``, exported first if needed, and checked
        against PyTorch whenever a session is made."""
        runner = self._runners.get(pool)
        if runner is None:
            export = ensure_export(self.adapter, pool)
            runner = _runner(export, self.runtime)
            check_parity(self.adapter, pool, runner, self.adapter.export_examples()[1:], self.runtime)
            self._runners[pool] = runner
        return runner


def compile_adapter(adapter: Adapter, runtime: str) -> None:
    """Make ``adapter`` run its frozen forward pass on ``runtime`` (``torch`` changes nothing)."""
    runtime = resolve_runtime(runtime)
    if runtime == "torch":
        return
    if not str(adapter.device).startswith("cpu"):
        raise UnsupportedOptionError(f"runtime={runtime!r} runs on the CPU; {adapter.name} is on "
                                     f"{adapter.device}: load it with device='cpu', or keep runtime='torch'")
    _import_runtime(runtime)
    compiled = CompiledEncoder(adapter, runtime)
    compiled.encoder(adapter.resolve_pool(None))  # export and check now, not at the first featurize
    adapter.compiled = compiled


def _import_runtime(runtime: str) -> Any:
    module = "onnxruntime" if runtime == "onnx" else "openvino"
    try:
        return __import__(module)
    except ImportError:
        raise ZooError(f"runtime={runtime!r} needs {module}: pip install 'zoo-models[{runtime}]'") from None


# -- export -------------------------------------------------------------------------------------


def export_key(adapter: Adapter, pool: str | None) -> dict[str, Any]:
    """What an export depends on; its hash names the export's folder."""
    import onnx
    import torch

    return {"model": adapter.name, "weights_sha256": weights_sha256(adapter), "zoo": __version__, "opset": OPSET,
            "torch": torch.__version__, "onnx": onnx.__version__, "pool": pool,
            "adapter": f"{type(adapter).__module__}.{type(adapter).__qualname__}", "runtime": _runtime_versions()}


def _runtime_versions() -> dict[str, str]:
    versions = {}
    for module in ("onnxruntime", "openvino"):
        with contextlib.suppress(ImportError):
            versions[module] = str(getattr(__import__(module), "__version__", "?"))
    return versions


def weights_sha256(adapter: Adapter) -> dict[str, str]:
    """The pinned sha256 of the weights, or, for a model with no pins (a local folder), each
    file's own (memoised by size and mtime)."""
    if adapter.spec.sha256:
        return dict(adapter.spec.sha256)
    if adapter.files is None:
        raise UnsupportedOptionError(f"{adapter.name} was built in memory: there are no weight files to key an "
                                     "export by; save it and load the folder")
    return {name: cached_sha256(adapter.files.path(name)) for name in adapter.files.members()}


def ensure_export(adapter: Adapter, pool: str | None) -> Export:
    """The checked export of ``adapter``'s forward pass with ``pool``: from the cache when its
    files still have the sha256 they were written with, else exported now (under a lock)."""
    from filelock import FileLock

    key = export_key(adapter, pool)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = zoo_home() / "compiled" / digest
    (zoo_home() / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(zoo_home() / "locks" / f"compiled-{digest}.lock")):
        held = _trusted(folder, key)
        if held is not None:
            return held
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=folder.parent))
        try:
            inputs = _export(adapter, pool, staging, key)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return Export(folder, inputs)


def _trusted(folder: Path, key: dict[str, Any]) -> Export | None:
    """The export in ``folder`` if its record names this key and every file matches its sha256."""
    try:
        record = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for name, digest in record.get("sha256", {}).items():
        if not (folder / name).is_file() or sha256_file(folder / name) != digest:
            return None
    return Export(folder, tuple(record["inputs"]))


def _export(adapter: Adapter, pool: str | None, folder: Path, key: dict[str, Any]) -> tuple[str, ...]:
    """Trace and fuse into ``folder``, and record the files' sha256; returns the input names."""
    names = _onnx_export(adapter, pool, adapter.export_examples()[0], folder / _PLAIN)
    fusion = adapter.onnx_fusion()
    if fusion is not None:
        _fuse(folder / _PLAIN, folder / _FUSED, fusion)
    files = [name for name in (_PLAIN, _FUSED) if (folder / name).is_file()]
    write_json_atomic(folder / "export.json", {"key": key, "inputs": list(names),
                                               "sha256": {name: sha256_file(folder / name) for name in files}})
    return names


class _Forward:
    """The traced function: named input tensors -> ``adapter.encode_batch(batch, pool)``."""

    def __init__(self, adapter: Adapter, pool: str | None, names: tuple[str, ...], mapping: bool) -> None:
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


def _onnx_export(adapter: Adapter, pool: str | None, example: Any, path: Path) -> tuple[str, ...]:
    """TorchScript-trace ``encode_batch`` to ONNX with the batch (and, for token inputs, the
    sequence) dimension left free."""
    import torch

    mapping = isinstance(example, Mapping)
    names = tuple(example) if mapping else ("pixel_values",)
    tensors = tuple(example[n] for n in names) if mapping else (example,)
    axes = {n: ({0: "batch", 1: "sequence"} if mapping and t.dim() > 1 else {0: "batch"})
            for n, t in zip(names, tensors)}
    forward = _Forward(adapter, pool, names, mapping).module()
    with torch.inference_mode():  # what an adapter builds on first use (a folded copy) is built outside the trace
        forward(*tensors)
    with adapter.export_context(), torch.no_grad(), warnings.catch_warnings():
        # The trace's warnings are about Python branches on shapes; check_parity is the test of them.
        warnings.simplefilter("ignore")
        torch.onnx.export(forward, tensors, str(path), input_names=list(names),
                          output_names=["embedding"], dynamic_axes={**axes, "embedding": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    return names


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


def check_parity(adapter: Adapter, pool: str | None, run: Callable[[Any], torch.Tensor], examples: list[Any],
                 runtime: str) -> float:
    """The lowest cosine between ``run`` and PyTorch's ``encode_batch`` over ``examples`` (batches
    of other sizes and lengths than the traced one); below :data:`MIN_COSINE` is an error."""
    import torch

    worst = 1.0
    with torch.inference_mode():
        for batch in examples:
            ours, torch_rows = run(batch), adapter.encode_batch(batch, pool=pool).float()
            worst = min(worst, float(torch.nn.functional.cosine_similarity(ours, torch_rows, dim=-1).min()))
    if worst < MIN_COSINE:
        raise ZooError(f"the {runtime} export of {adapter.name} (pool {pool!r}) does not give PyTorch's rows: "
                       f"lowest cosine {worst:.6f} < {MIN_COSINE}; load it with runtime='torch'")
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

        compiled = openvino.Core().compile_model(str(graph), "CPU")

        def run(arrays: dict[str, Any]) -> Any:
            return compiled(arrays)[0]

    def encode(batch: Any) -> torch.Tensor:
        tensors = batch if isinstance(batch, Mapping) else {export.inputs[0]: batch}
        return torch.from_numpy(run({name: tensors[name].numpy() for name in export.inputs}))

    return encode
