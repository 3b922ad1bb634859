"""Weight interpolation between a base model and one finetuned from it (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", 2022): ``(1 - alpha) * base + alpha * tuned`` for every
weight of the backbone, which keeps much of what finetuning gained while giving back little of what
the base model could do (open_clip users lose zero-shot accuracy to a full finetune; a merge at
0.5 recovers most of it).

``torch.lerp`` computes each weight, so ``alpha=0`` gives the base's weights and ``alpha=1`` the
finetuned ones exactly. The result is a finetuned folder like any other: ``zoo.load`` reads it on
top of the same base, and its provenance says it was merged, from what and at which alpha.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zoo import __version__
from zoo.catalog._loader import load
from zoo.errors import ZooError
from zoo.store._manifest import MANIFEST, read_json
from zoo.store._provenance import weights_provenance

from ._checkpoints import save_tensors, write_run_manifest
from ._finetuned import FORMAT
from ._lora import apply_saved_backbone


def merge(base: str, tuned: str | os.PathLike[str], alpha: float, output_dir: str | os.PathLike[str]) -> Path:
    """Interpolate ``tuned`` (a folder ``finetune`` wrote) with ``base`` (the model it was
    finetuned from, by any name :func:`zoo.load` takes) at ``alpha`` into ``output_dir``, which
    :func:`zoo.load` reads back. Returns the folder."""
    import math

    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"alpha is the finetuned weights' share, from 0 (the base) to 1 (the finetuned), "
                         f"not {alpha!r}")
    tuned, out = Path(tuned), Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; merge into a new folder (the finetuned run and its "
                              "checkpoints stay as they are)")
    manifest = _finetuned_manifest(tuned)
    if not manifest.get("backbone"):
        raise ZooError(f"{tuned} trained a head on a frozen backbone (linear-probe): its backbone is the base's, "
                       "so there is nothing to merge")
    model = load(base, device="cpu")
    recorded = manifest["base"]
    actual = weights_provenance(model.spec, model.files)
    if (recorded["model"], recorded.get("sha256")) != (actual["model"], actual["sha256"]):
        raise ZooError(f"{tuned} was finetuned from {recorded['model']}, not from {base} ({actual['model']}, "
                       "other weights); merge it with the model it was finetuned from")
    _interpolate(model.model, tuned, manifest["backbone"], alpha)
    return _write(out, tuned, manifest, model.model, alpha)


def _finetuned_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    manifest = read_json(path) if path.is_file() else None
    if not manifest or manifest.get("format") != FORMAT:
        raise ZooError(f"{folder} is not a folder that finetune wrote (no {MANIFEST} of format {FORMAT})")
    return manifest


def _interpolate(backbone: Any, folder: Path, entry: dict[str, Any], alpha: float) -> None:
    """``backbone`` (holding the base's weights) moved to ``alpha`` of the way to the finetuned
    weights that ``entry`` of ``folder``'s manifest names (a LoRA adapter: merged into a copy of
    the base first, so that the merge scales the adapter's change by ``alpha``)."""
    import copy

    import torch

    tuned = copy.deepcopy(backbone)
    apply_saved_backbone(tuned, folder, entry)
    theirs = tuned.state_dict()
    with torch.no_grad():
        for name, mine in backbone.state_dict().items():
            if mine.is_floating_point():
                mine.copy_(torch.lerp(mine, theirs[name].to(mine.dtype), alpha))
            elif not torch.equal(mine, theirs[name]):  # counters, ids: not weights to mix
                mine.copy_(theirs[name])


def _write(out: Path, tuned: Path, manifest: dict[str, Any], backbone: Any, alpha: float) -> Path:
    """The merged backbone beside a copy of the finetuned folder's head, under a manifest that
    records the merge."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    weights = [save_tensors(out / "merged.backbone.safetensors", backbone)]
    head = manifest.get("head")
    if head:
        shutil.copyfile(tuned / head["file"], out / head["file"])
        weights.append(head["file"])
    merged = {key: value for key, value in manifest.items() if key not in ("files", "epoch")}
    merged.update({"backbone": {"file": weights[0]}, "zoo_version": __version__,
                   "merged": {"alpha": alpha, "finetuned": str(tuned.resolve()),
                              "finetuned_sha256": manifest.get("files", {})}})
    write_run_manifest(out, MANIFEST, json.loads(json.dumps(merged, default=str)), weights)
    return out
