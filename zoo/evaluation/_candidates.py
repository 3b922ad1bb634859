"""The models a comparison runs: a name, folder or loaded model, with settings that make a variant
of it (``"minilm-l6[truncate_dim=128]"``, ``"minilm-l6[layer=-2]"``, ``"minilm-l6[runtime=onnx]"``),
each its own leaderboard row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo.catalog._loader import load
from zoo.errors import ZooError, did_you_mean

if TYPE_CHECKING:
    from zoo.core._embed_options import EmbedOptions
    from zoo.core._model import Model

    from ._task import ItemSet, Task

#: settings of the load
LOAD_SETTINGS = ("runtime", "device")
#: settings of the rows (:meth:`zoo.Model.embed_options`)
EMBED_SETTINGS = ("pool", "normalize", "truncate_dim", "layer", "layer_merge")
#: prompt names, overriding the task's choice for this model
PROMPT_SETTINGS = ("query_prompt", "corpus_prompt", "prompt")
SETTINGS = (*LOAD_SETTINGS, *EMBED_SETTINGS, *PROMPT_SETTINGS)
_VARIANT = re.compile(r"^(?P<name>.+?)\[(?P<settings>[^\[\]]*)\]$")


@dataclass(frozen=True)
class Candidate:
    """One leaderboard row: a model and the settings it is loaded and embedded with."""

    model: str | Model
    settings: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    @classmethod
    def parse(cls, given: str | Model | Candidate) -> Candidate:
        """A candidate from a loaded model, a name, or a name with ``[key=value,...]`` settings."""
        if isinstance(given, Candidate):
            return given
        if not isinstance(given, str):
            return cls(given, {}, given.name)
        match = _VARIANT.match(given)
        if match is None:
            return cls(given, {}, given)
        settings = {}
        for part in filter(None, (p.strip() for p in match["settings"].split(","))):
            key, equals, value = part.partition("=")
            key = key.strip()
            if not equals or key not in SETTINGS:
                raise ZooError(f"{given!r}: {part!r} is no setting of a model to compare; settings are "
                               f"{', '.join(SETTINGS)}, as name[key=value,...]{did_you_mean(key, SETTINGS)}")
            settings[key] = _value(value.strip())
        return cls(match["name"], settings, given)

    @property
    def as_published(self) -> bool:
        """Whether its rows are the model's own, so the catalogue's published scores apply to it
        (a truncated or other-layer variant is another embedding)."""
        return not any(key in self.settings for key in (*EMBED_SETTINGS, *PROMPT_SETTINGS))

    def load_key(self, device: str | None, runtime: str | None) -> tuple[Any, ...]:
        """What the loaded model depends on: candidates with one key share a load."""
        model = self.model if isinstance(self.model, str) else id(self.model)
        return model, self.settings.get("device", device), self.settings.get("runtime", runtime)

    def load(self, device: str | None, runtime: str | None) -> Model:
        """The model, loaded with this candidate's settings over the run's."""

        _, device, runtime = self.load_key(device, runtime)
        model = self.model if not isinstance(self.model, str) else load(self.model, device=device, runtime=runtime)
        model.require_dense("zoo evaluate")
        return model

    def options(self, model: Model, items: ItemSet, task: Task) -> EmbedOptions:
        """How ``items`` are embedded: through their tower, unit length (cosine geometry) unless
        the settings say otherwise, with the task's prompt or this candidate's."""
        tower = items.tower(model)
        prompt = None
        if tower == "text":
            own = {"queries": "query_prompt", "corpus": "corpus_prompt"}.get(items.name, "prompt")
            prompt = self.settings.get(own, task.prompts(model).get(items.name))
        embed = {k: v for k, v in self.settings.items() if k in EMBED_SETTINGS}
        embed.setdefault("normalize", True)
        return model.embed_options(tower=tower, prompt=prompt, **embed)


def _value(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)
