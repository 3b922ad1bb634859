"""zoo's own hook implementations. The defaults run last (``trylast``) so that any plugin can take
over first; reading zoo's own manifest runs first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .adapter import Adapter
from .hookspecs import hookimpl
from .sources import ModelFiles, fetch
from .spec import ModelSpec


@hookimpl(trylast=True)
def zoo_resolve_source(spec: ModelSpec, network: bool) -> ModelFiles:
    """Try ``spec.sources``: on-machine ones first, then (unless offline) downloads."""
    return fetch(spec, network=network)


@hookimpl(trylast=True)
def zoo_load_pretrained(
    spec: ModelSpec, files: ModelFiles, device: str, dtype: str | None, options: dict[str, Any]
) -> Adapter:
    """Dispatch on ``spec.backend`` to the registered adapter's ``load_pretrained``."""
    from .registry import get_registry

    adapter_cls = get_registry().adapter_entry(spec.backend).load_class()
    return adapter_cls.load_pretrained(spec, files, device=device, dtype=dtype, **options)


@hookimpl(tryfirst=True)
def zoo_spec_from_path(path: Path) -> ModelSpec | None:
    """A folder that :meth:`zoo.Adapter.save` (or ``finetune``) wrote: it has a ``zoo.json``.

    Runs first: the manifest describes the folder more exactly than its backend files alone.
    """
    from .manifest import MANIFEST, read_json, spec_from_manifest
    from .training.finetuned import FORMAT as FINETUNED, FinetunedModel

    if not (path.is_dir() and (path / MANIFEST).is_file()):
        return None
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") == FINETUNED:
        return FinetunedModel.spec_for_path(path, manifest)
    return spec_from_manifest(path)


@hookimpl
def zoo_register_adapters(register: Any) -> None:
    """Finetuned checkpoints load through the same hooks as any other model."""
    register("finetuned", "zoo.training.finetuned:FinetunedModel")
