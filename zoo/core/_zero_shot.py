"""Zero-shot classification: inputs scored against label names through the model's text tower.

Each label becomes one or more texts (templates: ``"a photo of a {}."``); their embeddings are
averaged and re-normalised into one vector per label, as CLIP and open_clip's
``build_zero_shot_classifier`` do. An input's probabilities are the softmax of its cosine
similarity to each label vector times a scale: the model's own learned ``logit_scale`` for an
image-text model (about 100 for CLIP), 20 for a text model (the scale sentence-transformers
trains its contrastive embedders with). Text models compare texts with label descriptions;
image-text models compare images (or texts) with labels in their shared space.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from zoo.errors import UnsupportedOptionError

if TYPE_CHECKING:
    import numpy as np

    from ._embed_options import EmbedOptions
    from ._model import Model

Template = str | Callable[[str], str]  # "a photo of a {}." or a function of the label

#: the scale of a text model's cosine similarities (sentence-transformers' MultipleNegativesRankingLoss)
TEXT_SCALE = 20.0


#: transformers' zero-shot-audio-classification pipeline's default hypothesis template.
AUDIO_TEMPLATE = "This is a sound of {}."


def default_templates(model: Model) -> tuple[Template, ...]:
    """CLIP's 80 ImageNet prompts for an image-text model, the template of transformers'
    zero-shot-audio-classification pipeline for an audio-text one (CLAP), the bare label for a
    text model."""
    if model.tower()[0] == "audio":
        return (AUDIO_TEMPLATE,)
    if model.tower()[0] != "text":
        from open_clip import OPENAI_IMAGENET_TEMPLATES

        return tuple(OPENAI_IMAGENET_TEMPLATES)
    return ("{}",)


def label_vectors(model: Model, labels: Sequence[str], templates: Sequence[Template] | Template | None = None,
                  *, batch_size: int = 32, options: EmbedOptions | None = None) -> np.ndarray:
    """``(len(labels), D)`` unit vectors: each label's template texts embedded (through the text
    tower, with ``options`` where given: a truncated or other-layer embedding), averaged,
    re-normalised."""
    import numpy as np

    labels = _check_labels(model, labels)
    forms = _templates(model, templates)
    texts = [form.format(label) if isinstance(form, str) else form(label) for label in labels for form in forms]
    settings: dict[str, Any] = {"options": options} if options is not None else {"tower": "text", "normalize": True}
    rows = np.asarray(model.featurize(texts, batch_size=batch_size, progress=False, **settings), dtype=np.float32)
    means = rows.reshape(len(labels), len(forms), -1).mean(axis=1)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def classify(model: Model, inputs: Iterable[Any], labels: Sequence[str],
             templates: Sequence[Template] | Template | None = None, *, scale: float | None = None,
             batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
    """``(N, len(labels))`` float32 probabilities of each input among ``labels``; see the module."""
    import numpy as np

    vectors = label_vectors(model, labels, templates, batch_size=batch_size)
    features = np.asarray(model.featurize(inputs, batch_size=batch_size, normalize=True, progress=progress),
                          dtype=np.float32)
    logits = logit_scale(model, scale) * features @ vectors.T
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def logit_scale(model: Model, scale: float | None = None) -> float:
    """``scale`` if given; else the model's learned ``logit_scale`` (exp'd) or :data:`TEXT_SCALE`."""
    if scale is not None:
        if isinstance(scale, bool) or not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, not {scale!r}")
        return float(scale)
    # CLAP learns one scale per direction; audio against texts is logit_scale_a (its logits_per_audio)
    learned = getattr(model.model, "logit_scale", None)
    if learned is None:
        learned = getattr(model.model, "logit_scale_a", None)
    return float(learned.detach().exp()) if learned is not None and model.tower()[0] != "text" else TEXT_SCALE


def _check_labels(model: Model, labels: Sequence[str]) -> list[str]:
    if "text" not in model.towers:
        raise UnsupportedOptionError(
            f"{model.name} is a {model.modality} model with no text tower, so it cannot score label names; "
            "use an image-text model (open_clip, CLIP) or finetune a head: model.finetune(..., "
            "strategy='linear-probe')")
    if isinstance(labels, str) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ValueError(f"labels must be a non-empty list of label names, not {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {sorted({x for x in labels if list(labels).count(x) > 1})}")
    return list(labels)


def _templates(model: Model, templates: Sequence[Template] | Template | None) -> list[Template]:
    if templates is None:
        return list(default_templates(model))
    forms = [templates] if isinstance(templates, str) or callable(templates) else list(templates)
    for form in forms:
        if isinstance(form, str) and "{}" not in form:
            raise ValueError(f"template {form!r} has no '{{}}' where the label goes, e.g. 'a photo of a {{}}.'")
        if isinstance(form, str) and _fields(form) != 1:
            raise ValueError(f"template {form!r} must have exactly one '{{}}' (the label) and no other braces; "
                             "write a literal brace as '{{' or '}}'")
    if not forms:
        raise ValueError("templates is empty; leave it out for the default ones")
    return forms


def _fields(template: str) -> int:
    """How many replacement fields ``template.format`` would fill (-1: not a valid format string)."""
    import string

    try:
        return sum(1 for _, field, _, _ in string.Formatter().parse(template) if field is not None)
    except ValueError:
        return -1
