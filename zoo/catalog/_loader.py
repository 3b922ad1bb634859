"""Name resolution and loading: ``zoo.load(name)`` and its helpers.

A name is, in this order: an existing path written as one (``./x``, ``/x``, ``~/x``); a curated
name or alias from the registry; a model installed from a bundle; a pass-through ``scheme:id``
(``hf:org/name@rev``); an existing local folder.
Anything else is an :class:`~zoo.errors.UnknownModelError` with close matches.

Loading resolves everything once, here: the spec, its verified files, the encoder class, the
models it requires and each tower's decoder. The :class:`~zoo.core._model.Model` is handed what it needs
and never asks the registry again.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from zoo.core._compiled import compile_encoder, import_runtime, resolve_runtime
from zoo.core._encoder import resolve_device
from zoo.core._model import Model
from zoo.errors import (
    PluginError,
    UnknownModelError,
    UnsupportedOptionError,
    ZooError,
    did_you_mean,
)
from zoo.store._installed import installed_spec
from zoo.store._model_files import ModelFiles
from zoo.store._settings import offline, zoo_home
from zoo.store._sources import verify_files

from ._kinds import wrong_kind
from ._plugin_manager import get_plugin_manager
from ._registry import Registry, get_registry
from ._spec import ModelSpec, Source


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and Path(name).exists())


def resolve(name: str | os.PathLike[str], kind: str | None = None) -> ModelSpec:
    """The :class:`~zoo.catalog._spec.ModelSpec` that ``name`` refers to (nothing is downloaded),
    read as ``kind`` where its files do not say."""
    return _resolve(name, get_registry(), kind)


def _resolve(name: str | os.PathLike[str], registry: Registry, kind: str | None = None) -> ModelSpec:
    """The spec ``name`` names, with ``kind`` (the one the caller asked for) settled or refused."""
    if kind is not None and kind not in registry.kinds:
        raise ValueError(f"kind must be one of {', '.join(registry.kinds)} (those the installed plugins register), "
                         f"not {kind!r}{did_you_mean(kind, registry.kinds)}")
    spec = _named_spec(name, registry, kind)
    if kind is None:
        return spec
    if spec.kind is None:  # files that may not say their kind are read as this one; load() checks the result
        return spec.replace(kind=kind)
    if spec.kind != kind:
        raise wrong_kind(spec.name, spec.kind, kind)
    return spec


def _named_spec(name: str | os.PathLike[str], registry: Registry, kind: str | None) -> ModelSpec:
    if isinstance(name, os.PathLike):
        return _spec_from_path(Path(name), kind)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"a model name must be a non-empty string or a path, not {name!r}")
    name = name.strip()
    if _looks_like_path(name) and Path(name).expanduser().exists():
        return _spec_from_path(Path(name).expanduser(), kind)
    spec = registry.get(name) or installed_spec(name)
    if spec is not None:
        return spec
    if _looks_like_path(name):
        return _spec_from_path(Path(name).expanduser(), kind)
    scheme, sep, rest = name.partition(":")
    if sep and scheme in registry.schemes:
        if not rest:
            raise UnknownModelError(name, hint=f"(give an id after '{scheme}:', e.g. '{scheme}:org/name')")
        backend = registry.schemes[scheme]
        return registry.adapter_entry(backend).load_class().spec_for_id(backend, rest)
    if Path(name).exists():
        return _spec_from_path(Path(name), kind)
    hint = registry.naming_hint()
    if sep:
        hint = f"(no plugin serves the prefix '{scheme}:'; known prefixes: " + (
            ", ".join(f"'{s}:'" for s in sorted(registry.schemes)) or "none") + ")"
    raise UnknownModelError(name, registry.suggest(name), hint=hint)


def _spec_from_path(path: Path, kind: str | None) -> ModelSpec:
    if not path.exists():
        raise FileNotFoundError(f"no such model folder: {path}")
    spec = get_plugin_manager().hook.zoo_spec_from_path(path=path.resolve(), kind=kind)
    if spec is None:
        raise ZooError(
            f"{path} is not a model folder any plugin recognises: zoo looked for zoo.json (a folder that "
            "model.save() or finetune wrote), modules.json (sentence-transformers), config.json with a "
            "'model_type' (transformers) or an 'architecture' (timm), and open_clip_config.json (open_clip)"
        )
    return spec


def locate_files(spec: ModelSpec, *, network: bool | None = None) -> ModelFiles:
    """``spec``'s verified files on this machine, through the ``zoo_resolve_source`` hook (mirrors
    first, then zoo's own sources; downloading unless offline)."""
    allow_network = (not offline()) if network is None else network
    result = get_plugin_manager().hook.zoo_resolve_source(spec=spec, cache_dir=zoo_home(), network=allow_network)
    if isinstance(result, ModelFiles):
        return result
    # A plugin returned a folder: zoo still checks every pinned hash.
    root = Path(result)
    return verify_files(spec, Source("path", str(root)), root)


def load(
    name: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: Any = None,
    runtime: str | None = None,
    kind: str | None = None,
    **options: Any,
) -> Model:
    """Load a pretrained model by curated name, alias, ``backend:id`` or path.

    Args:
        name: e.g. ``"minilm-l6"``, ``"hf:sentence-transformers/all-MiniLM-L6-v2@<rev>"`` or
            ``"./runs/my-model"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        dtype: compute dtype (``"float32"`` default, ``"bfloat16"``, a ``torch.dtype``...);
            featurize output is always float32.
        runtime: what runs the frozen forward pass: ``"torch"``, or ``"onnx"`` / ``"openvino"``
            on the CPU, exported from these weights on first use and cached (see
            :mod:`zoo.core._compiled`); ``None`` reads ``ZOO_RUNTIME``, else ``"torch"``.
        kind: the kind of model expected, ``"embedder"`` or ``"reranker"``: a folder whose files
            do not say (a transformers sequence classifier) is read as this kind, and a model of
            another kind is an :class:`~zoo.errors.UnsupportedModelKindError`; ``None`` takes the
            kind the registry or the files give.
        **options: passed to the encoder, e.g. ``trust_remote_code=True`` (never on by default).

    Returns:
        A ready :class:`zoo.Model` in eval mode.
    """
    chosen, runtime = runtime is not None, resolve_runtime(runtime)
    if runtime != "torch":
        import_runtime(runtime)  # before the weights load: a missing extra is said at once
        device = device or "cpu"
    registry = get_registry()
    model = _load(_resolve(name, registry, kind), registry, device=resolve_device(device), dtype=dtype,
                  options=options)
    if kind is not None and model.kind != kind:  # what the backend built, whatever the name claimed
        raise wrong_kind(model.name, model.kind, kind)
    try:
        if model.head is not None and runtime != "torch":  # its export would be keyed by the base's weights
            raise UnsupportedOptionError(f"{model.name} is finetuned: runtime={runtime!r} serves pretrained "
                                         "models; load it with runtime='torch'")
        model.compiled = compile_encoder(model.encoder, runtime)
    except UnsupportedOptionError as exc:
        if chosen:
            raise
        # ZOO_RUNTIME is a default for every load: a model it cannot run still loads, on PyTorch.
        warnings.warn(f"ZOO_RUNTIME={runtime} does not apply here: {exc}; {model.name} runs on PyTorch",
                      RuntimeWarning, stacklevel=2)
    return model


def _load(spec: ModelSpec, registry: Registry, *, device: str, dtype: Any, options: dict[str, Any]) -> Model:
    """Resolve ``spec``'s files, encoder class, required models and decoders once, then build it."""
    files = locate_files(spec)
    spec, adapter_class = registry.adapter_entry(spec.backend).load_class().resolve_files(spec, files)
    requires = {name: _load(_resolve(name, registry), registry, device=device, dtype=dtype, options=options)
                for name in spec.requires}
    loaded = get_plugin_manager().hook.zoo_load_pretrained(
        spec=spec, files=files, adapter_class=adapter_class, requires=requires, device=device, dtype=dtype,
        options=dict(options))
    if loaded is None:
        raise PluginError(f"no plugin could load {spec.name!r} (backend {spec.backend!r}): every "
                          "zoo_load_pretrained implementation returned None")
    if isinstance(loaded, Model):
        return loaded
    return Model(loaded)  # binds each tower's decoder from the registry


def info(name: str) -> dict[str, Any]:
    """Everything the registry knows about ``name``, as plain data."""
    return resolve(name).to_dict()


def list_models(pattern: str | list[str] | None = None, *, modality: str | None = None,
                sort: str | None = None) -> list[str]:
    """Curated model names matching fnmatch ``pattern`` (e.g. ``"*minilm*"``), optionally of one
    modality; ``sort="top1"`` (any metric in :data:`zoo.catalog._scores.METRICS` a model publishes) keeps
    the models that publish it, best first."""
    return get_registry().list_models(pattern, modality, sort)


def pull(name: str) -> ModelFiles:
    """Make ``name``'s files available on this machine (downloading if needed) and verify them."""
    return locate_files(resolve(name))


def verify(name: str) -> ModelFiles:
    """Re-hash every pinned file of ``name`` (ignoring the hash memo); raise on any mismatch."""
    files = locate_files(resolve(name), network=False)
    return verify_files(files.spec, files.source, files.root, use_memo=False)
