"""The embedding options users reach for, resolved once against a loaded model: prompts,
Matryoshka truncation, quantized outputs and intermediate layers (:class:`EmbedOptions`).

``featurize``, ``zoo embed``, the scikit-learn transformer and the server all take the same
options and hand them to :meth:`zoo.Model.embed_options`, which checks them against the model
(its declared prompts and Matryoshka dimensions, the layers it has) and says what is wrong by
name. The resolved options travel with the output as provenance.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from zoo.errors import UnsupportedOptionError, did_you_mean

from ._quantize import check_precision, output_width

if TYPE_CHECKING:
    from types import FrameType

    import torch

    from zoo.catalog._spec import ModelSpec

LayerMerge = Literal["concat", "mean"]
#: the prompts sentence-transformers' ``encode_document`` tries, in its order, when none is asked for
DOCUMENT_PROMPTS = ("document", "passage", "corpus")
LAYER_MERGES = ("concat", "mean")
#: what an input is to a retrieval model: a query, or a document of the corpus it searches
ROLES = ("query", "document")


@dataclass(frozen=True)
class EmbedOptions:
    """Every setting of a row, resolved once per call against a loaded model
    (:meth:`zoo.Model.embed_options`), handed to the engine and written to provenance.

    Attributes:
        tower: the modality of the inputs, naming the tower that embeds them (``"text"``...).
        pool: the pooling mode (None where the model has no choice).
        normalize: whether rows are L2-normalised.
        prompt_name: the declared prompt used (``"query"``), or None for a literal or no prompt.
        prompt: the text put before every text input (``""``: none).
        layers: hidden layers to pool instead of the final output (``()``: the final output).
        layer_merge: how several layers combine: ``"concat"`` or ``"mean"``.
        dim: the width the model (or the merged layers) gives, before truncation.
        truncate_dim: keep the first this many dimensions (re-normalised when normalising).
        precision: ``float32``, ``int8``, ``uint8``, ``binary`` or ``ubinary`` (see :mod:`zoo.core._quantize`).
        role: ``"query"`` or ``"document"`` (None: neither), as sentence-transformers'
            ``encode_query`` / ``encode_document``: it picks the role's declared prompt when none is
            asked for, and an encoder that runs the roles differently (:meth:`zoo.Encoder.for_role`:
            a ColBERT's query expansion and lengths) runs that role's path.
        tower_settings: how the tower's modality reads an input, as it registered them (a video's
            frames per clip, their sampling and pooling); empty for most.
    """

    dim: int
    prompt_name: str | None = None
    prompt: str = ""
    layers: tuple[int, ...] = ()
    layer_merge: str = "concat"
    truncate_dim: int | None = None
    precision: str = "float32"
    tower: str | None = None
    pool: str | None = None
    normalize: bool = False
    role: str | None = None
    tower_settings: tuple[tuple[str, Any], ...] = ()  # (name, value) pairs: the options stay hashable

    @property
    def float_dim(self) -> int:
        """The width of the float rows, after truncation."""
        return self.truncate_dim or self.dim

    @property
    def width(self) -> int:
        """Columns of the final output (packed bits take a byte per eight dimensions)."""
        return output_width(self.float_dim, self.precision)

    def merge(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Several pooled layers ``[(B, d), ...]`` as one ``(B, D)`` batch."""
        import torch

        if len(outputs) == 1:
            return outputs[0]
        if self.layer_merge == "mean":
            return torch.stack(list(outputs)).mean(0)
        return torch.cat(list(outputs), dim=-1)

    def provenance(self) -> dict[str, Any]:
        """The options as plain data, for an output's metadata (read back by :func:`recorded_settings`)."""
        return {"tower": self.tower, "pool": self.pool, "normalize": self.normalize, "prompt_name": self.prompt_name,
                "prompt": self.prompt, "layers": list(self.layers),
                "layer_merge": self.layer_merge if len(self.layers) > 1 else None,
                "truncate_dim": self.truncate_dim, "precision": self.precision,
                **({"role": self.role} if self.role else {}),
                **({"tower_settings": dict(self.tower_settings)} if self.tower_settings else {})}


def recorded_settings(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The settings :meth:`EmbedOptions.provenance` wrote, as keyword arguments of
    :meth:`zoo.Model.embed_options`, so rows computed later match the recorded ones. The prompt
    precision and role are left out: a query takes its own prompt and role, and search compares
    float rows."""
    layers = provenance.get("layers") or None
    settings = {"pool": provenance.get("pool"), "normalize": provenance.get("normalize"), "layers": layers,
                "truncate_dim": provenance.get("truncate_dim")}
    if layers and len(layers) > 1:
        settings["layer_merge"] = provenance.get("layer_merge") or "concat"
    return settings


def resolve_prompt(spec: ModelSpec, prompt: str | None, prompt_text: str | None, *,
                   takes_text: bool) -> tuple[str | None, str]:
    """``(name, text)`` of the prompt asked for by name (one the model declares) or literally."""
    if prompt is None and prompt_text is None:
        if spec.default_prompt is None or not takes_text:
            return None, ""
        prompt = spec.default_prompt  # the weights' default_prompt_name, as encode() applies it
    if prompt is not None and prompt_text is not None:
        raise ValueError("pass either prompt= (a name the model declares) or prompt_text= (the text itself), "
                         "not both")
    if not takes_text:
        raise UnsupportedOptionError(f"{spec.name} embeds {spec.modality} inputs, not texts: prompts apply to "
                                     "texts only")
    if prompt_text is not None:
        if not isinstance(prompt_text, str):
            raise TypeError(f"prompt_text must be a string, not {type(prompt_text).__name__}")
        return None, prompt_text
    declared: Mapping[str, str] = spec.prompts
    if prompt is None or prompt not in declared:
        listed = ", ".join(f"{k!r}" for k in declared) or "none"
        raise ValueError(f"unknown prompt {prompt!r} for {spec.name}{did_you_mean(str(prompt), declared)}; it "
                         f"declares: {listed} (or pass the text itself as prompt_text=)")
    return prompt, declared[prompt]


def resolve_layers(layer: int | None, layers: Sequence[int] | None, layer_merge: str) -> tuple[int, ...]:
    """The layer indices asked for (``layer=`` or ``layers=``), checked for form only."""
    if layer is not None and layers is not None:
        raise ValueError("pass either layer= or layers=, not both")
    if layer_merge not in LAYER_MERGES:
        raise ValueError(f"layer_merge must be one of {', '.join(LAYER_MERGES)}, not {layer_merge!r}")
    chosen = (layer,) if layer is not None else tuple(layers or ())
    if layers is not None and not chosen:
        raise ValueError("layers= is empty; name at least one layer, e.g. layers=[-2]")
    for index in chosen:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"a layer is an integer index (negative counts from the last), not {index!r}")
    return chosen


def check_truncate_dim(spec: ModelSpec, truncate_dim: int | None, dim: int) -> int | None:
    """``truncate_dim`` if it fits ``dim``; warns when the model was not trained for it."""
    if truncate_dim is None or truncate_dim == dim:
        return None
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 0 < truncate_dim < dim:
        raise ValueError(f"truncate_dim must be an integer from 1 to {dim} for {spec.name}, not {truncate_dim!r}")
    declared = tuple(spec.matryoshka_dims)
    if not declared:
        warnings.warn(f"{spec.name} declares no Matryoshka dimensions: truncating it to {truncate_dim} "
                      "dimensions keeps the first ones, but its training does not guarantee their quality",
                      UserWarning, stacklevel=_user_frame())
    elif truncate_dim not in declared:
        warnings.warn(f"{spec.name} was trained for truncation to {', '.join(map(str, declared))} "
                      f"dimensions, not {truncate_dim}: quality is not guaranteed", UserWarning,
                      stacklevel=_user_frame())
    return truncate_dim


def _user_frame() -> int:
    """The ``stacklevel`` of the first caller outside zoo, so a warning points at the user's line
    whichever verb (featurize, embed, a transformer) checked the options."""
    level = 2
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("zoo."):
        level, frame = level + 1, frame.f_back
    return level


def merged_dim(name: str, dims: Sequence[int], layer_merge: str) -> int:
    """The width of several layers merged."""
    if layer_merge == "mean" and len(set(dims)) > 1:
        raise ValueError(f"layers of {name} have widths {list(dims)}: layer_merge='mean' needs equal widths; "
                         "use layer_merge='concat'")
    return sum(dims) if layer_merge == "concat" else dims[0]


def build_options(spec: ModelSpec, *, dim: int, layer_dims: Any, takes_text: bool, prompt: str | None = None,
                  prompt_text: str | None = None, truncate_dim: int | None = None, precision: str = "float32",
                  layer: int | None = None, layers: Sequence[int] | None = None, layer_merge: str = "concat",
                  tower: str | None = None, pool: str | None = None, normalize: bool = False,
                  role: str | None = None, tower_settings: Mapping[str, Any] | None = None) -> EmbedOptions:
    """Check every option against the model and return them resolved. ``layer_dims(layers)`` gives
    the widths of the named layers (or raises :class:`UnsupportedOptionError`)."""
    check_role(role)
    if role is not None and prompt is None and prompt_text is None and takes_text:
        # encode_query / encode_document: the role's declared prompt, else none (not the default one)
        prompt = dict(zip(ROLES, retrieval_prompts(spec.prompts)))[role]
        prompt_text = "" if prompt is None else None
    prompt_name, text = resolve_prompt(spec, prompt, prompt_text, takes_text=takes_text)
    chosen = resolve_layers(layer, layers, layer_merge)
    if chosen:
        dim = merged_dim(spec.name, layer_dims(chosen), layer_merge)
    return EmbedOptions(dim=dim, prompt_name=prompt_name, prompt=text, layers=chosen, layer_merge=layer_merge,
                        truncate_dim=check_truncate_dim(spec, truncate_dim, dim),
                        precision=check_precision(precision), tower=tower, pool=pool, normalize=normalize,
                        role=role, tower_settings=tuple((tower_settings or {}).items()))


def embedded_as(role: str | None) -> str:
    """How rows of ``role`` were embedded, in words: "as queries", "as documents", "with no role"."""
    return {"query": "as queries", "document": "as documents"}.get(str(role), "with no role")


def check_role(role: str | None) -> None:
    """``role`` is None or one of :data:`ROLES`."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be 'query' or 'document', not {role!r}{did_you_mean(str(role), ROLES)}")


def retrieval_prompts(declared: Mapping[str, str], query: str | None = None, corpus: str | None = None
                      ) -> tuple[str | None, str | None]:
    """The prompt names for queries and for the corpus: those asked for, else the ones
    sentence-transformers' ``encode_query`` / ``encode_document`` pick from the ``declared``
    prompts (``query``; ``document``, ``passage`` or ``corpus``), else none."""
    if query is None and "query" in declared:
        query = "query"
    if corpus is None:
        corpus = next((name for name in DOCUMENT_PROMPTS if name in declared), None)
    return query, corpus
