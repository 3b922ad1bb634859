"""Provenance: which pinned weights produced a file (an embedding table, a finetuned checkpoint).

One dict, written wherever zoo stores results, so that a reader can tell whether two files came
from the same model (name, revision and weight sha256 must all match).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from zoo import __version__

if TYPE_CHECKING:
    from zoo.catalog._spec import ModelSpec
    from zoo.core._embed_options import EmbedOptions

    from ._model_files import ModelFiles


def weights_provenance(spec: ModelSpec, files: ModelFiles | None) -> dict[str, Any]:
    """The model and the exact files it was loaded from; for a model built on others (a finetuned
    folder), what it was built on and how (``built_on``: the base models, the objective, the
    training data's fingerprint)."""
    out: dict[str, Any] = {
        "model": spec.name, "backend": spec.backend, "modality": spec.modality, "revision": spec.revision,
        "sha256": dict(spec.sha256), "source": files.source.describe() if files else None,
        "zoo_version": __version__}
    if spec.requires:
        out["built_on"] = {"models": list(spec.requires), **json.loads(json.dumps(dict(spec.config), default=str))}
    return out


def embedding_provenance(spec: ModelSpec, files: ModelFiles | None, *, options: EmbedOptions,
                         runtime: str = "torch") -> dict[str, Any]:
    """:func:`weights_provenance` plus how the embeddings were computed from it: pooling,
    normalisation, preprocessing, the runtime (PyTorch, ONNX Runtime, OpenVINO) and the embedding
    options (prompt, layers, truncation, precision). ``embed_dim`` is the width of the float rows,
    after truncation; ``kind`` the model's kind, where it is not ``embedder``."""
    preprocessing = json.loads(json.dumps(dict(spec.preprocessing), default=str))  # plain JSON values
    # An embedder's rows record no kind, as files written before kinds did not; any other kind's do,
    # so that what reads them picks that kind's row format.
    kind = {"kind": spec.kind} if spec.kind not in (None, "embedder") else {}
    return {**weights_provenance(spec, files), "embed_dim": options.float_dim, "preprocessing": preprocessing,
            "runtime": runtime, **kind, **options.provenance()}
