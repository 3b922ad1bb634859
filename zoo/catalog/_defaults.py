"""zoo's own hook implementations. The defaults run last (``trylast``) so that any plugin can take
over first; reading zoo's own manifest runs first."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.hookspecs import RegisterKind, hookimpl
from zoo.store._manifest import FORMAT, is_manifest_of, spec_from_manifest
from zoo.store._model_files import ModelFiles
from zoo.store._sources import provide_files

from ._kinds import builtin_kinds
from ._spec import ModelSpec

if TYPE_CHECKING:
    from zoo.core._encoder import Encoder
    from zoo.core._model import Model


@hookimpl
def zoo_register_kinds(register: RegisterKind) -> None:
    """``embedder`` and ``reranker``."""
    builtin_kinds(register)


@hookimpl(trylast=True)
def zoo_resolve_source(spec: ModelSpec, cache_dir: Path, network: bool) -> ModelFiles:
    """Try ``spec.sources`` under the cache root ``cache_dir``: on-machine ones first, then (unless
    offline) downloads."""
    return provide_files(spec, cache_dir=cache_dir, network=network)


@hookimpl(trylast=True)
def zoo_load_pretrained(spec: ModelSpec, files: ModelFiles, adapter_class: type[Encoder],
                        requires: Mapping[str, Model], device: str, dtype: Any,
                        options: dict[str, Any]) -> Encoder:
    """Build the model with the encoder class the loader resolved for it."""
    return adapter_class.load_pretrained(spec, files, device=device, dtype=dtype, **options)


@hookimpl(tryfirst=True)
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A folder that :meth:`zoo.Model.save` wrote: its ``zoo.json`` describes it more exactly than
    its backend files alone, so this runs first."""
    return spec_from_manifest(path) if is_manifest_of(path, FORMAT) else None
