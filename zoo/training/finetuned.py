"""A finetuned model: the base adapter (with its trained backbone weights, where they changed) plus a
classification head, saved as safetensors with a ``zoo.json`` manifest and loaded by ``zoo.load``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..adapter import Adapter
from ..errors import IntegrityError
from ..featurize import OnError
from ..manifest import MANIFEST, read_json
from ..provenance import base_model_name
from ..spec import ModelSpec, Source
from .checkpoints import load_tensors
from .heads import build_head

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..model_files import ModelFiles

FORMAT = "zoo-finetuned/1"


def features(base: Adapter, batch: Any, pool: str | None) -> torch.Tensor:
    """Pooled features of a collated batch exactly as :meth:`Adapter.featurize` computes them, with
    gradients where parameters train: what the head sees in training and in prediction."""
    import torch

    out = base.encode_batch(batch, pool=pool).float()
    return torch.nn.functional.normalize(out, dim=-1) if base.spec.normalize else out


class FinetunedModel(Adapter):
    """A base model with a trained classification head: ``featurize``, ``predict``, ``predict_proba``."""

    backend = "finetuned"
    strategies = ()  # finetune the base model instead

    def __init__(self, spec: ModelSpec, base: Adapter, head: torch.nn.Module, labels: list[Any], *,
                 pool: str | None, files: ModelFiles | None) -> None:
        super().__init__(spec, base.model, files=files, device=base.device)
        self.base = base
        self.head = head.to(base.device).eval()
        self.labels = list(labels)
        self.pool = pool

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def spec_for_path(cls, path: Path, manifest: dict[str, Any]) -> ModelSpec:
        base = manifest["base"]
        name = base_model_name(base)
        return ModelSpec(name=str(path), modality=base["modality"], backend=cls.backend, backend_id=name,
                         embed_dim=manifest["head"]["in_features"], sources=(Source("path", str(path)),),
                         sha256=manifest["files"], requires=(name,), description=f"finetuned from {name}")

    @classmethod
    def load_pretrained(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: Any = None,
                        base: Adapter | None = None, **options: Any) -> FinetunedModel:
        """Put the saved head (and backbone weights, where they trained) on ``base``, the loaded
        model named in ``spec.requires``, which the loader hands over."""
        if base is None:
            raise TypeError(f"{spec.name} is a finetuned model: load it with zoo.load, which loads its base "
                            f"{spec.backend_id!r} first")
        manifest = read_json(files.root / MANIFEST)
        # The base's files were verified against its current pins: equal pins mean equal weights.
        for name, recorded in manifest["base"].get("sha256", {}).items():
            pinned = base.spec.sha256.get(name)
            if pinned is not None and pinned != recorded:
                raise IntegrityError(f"{name} of base model {spec.backend_id!r}", recorded, pinned)
        if manifest.get("backbone"):
            load_tensors(base.model, files.root / manifest["backbone"]["file"])
        head_info = manifest["head"]
        head = build_head(head_info["type"], head_info["in_features"], head_info["num_classes"],
                          **head_info.get("options", {}))
        load_tensors(head, files.root / head_info["file"])
        spec = spec.replace(modality=base.modality, normalize=base.spec.normalize, pooling=manifest.get("pool"))
        return cls(spec, base, head, manifest["labels"], pool=manifest.get("pool"), files=files)

    # -- the featurize contract, from the (finetuned) base ----------------------------------------

    @property
    def embed_dim(self) -> int:
        return self.base.embed_dim

    @property
    def preprocess(self) -> Any:
        return self.base.preprocess

    @property
    def decode(self) -> Callable[[Any], Any]:
        return self.base.decode

    def bind_decoder(self, decode: Callable[[Any], Any]) -> None:
        self.base.bind_decoder(decode)

    def plan_batches(self, items: Sequence[Any], batch_size: int) -> Iterator[tuple[list[int], Any]]:
        return self.base.plan_batches(items, batch_size)

    def collate(self, items: list[Any]) -> Any:
        return self.base.collate(items)

    def input_decoder(self) -> Callable[[Any], Any]:
        return self.base.input_decoder()

    def finish_batch(self, batch: Any) -> tuple[Any, list[tuple[int, str]]]:
        return self.base.finish_batch(batch)

    @property
    def image_decoding(self) -> str:
        """The base's ``image_decoding`` (``"device"`` or ``"pil"``), for image models."""
        return self._image_base().image_decoding

    @image_decoding.setter
    def image_decoding(self, mode: str) -> None:
        self._image_base().image_decoding = mode

    def _image_base(self) -> Any:
        if not hasattr(type(self.base), "image_decoding"):
            raise AttributeError(f"{self.spec.name} decodes no images (its base is a {self.base.modality} model)")
        return self.base

    def windows(self, item: Any) -> list[tuple[Any, float]] | None:
        return self.base.windows(item)

    @property
    def parallel_decode(self) -> bool:  # type: ignore[override]
        return self.base.parallel_decode

    @property
    def decodes_all_first(self) -> bool:
        return self.base.decodes_all_first

    def encode_batch(self, batch: Any, *, pool: str | None = None) -> torch.Tensor:
        return self.base.encode_batch(batch, pool=pool or self.pool)

    def resolve_pool(self, pool: str | None) -> str | None:
        return self.base.resolve_pool(pool or self.pool)

    # -- classification -------------------------------------------------------------------------

    def predict_proba(self, inputs: Iterable[Any], *, batch_size: int = 32, progress: bool | None = None,
                      on_error: OnError = "raise", return_tensors: Literal["np", "pt"] = "np") -> np.ndarray:
        """Class probabilities ``(N, len(self.labels))``; column ``i`` is ``self.labels[i]``."""
        def encode(batch: Any) -> torch.Tensor:
            return self.head(features(self.base, batch, self.pool)).softmax(-1)

        return self._run(inputs, encode=encode, dim=len(self.labels), batch_size=batch_size, normalize=False,
                         return_tensors=return_tensors, progress=progress, on_error=on_error, desc="predict")[0]

