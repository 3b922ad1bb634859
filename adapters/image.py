"""What every image backbone adapter shares: the weights' own transform, batching of decoded
images, and the pretrained classifier head as ``predict_proba`` where the weights have one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Encoder, ExportPlan

from .device_images import DecodesImages, ImageBatcher
from .fold import fold_batchnorm

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec


class ImageBackboneAdapter(DecodesImages, Encoder):
    """An image model: ``features`` gives pooled pre-logits, ``logits`` the pretrained head."""

    def __init__(self, spec: ModelSpec, model: torch.nn.Module, *, transform: Callable[[Any], torch.Tensor],
                 labels: list[str] | Callable[[], list[str] | None] | None = None, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.transform = transform
        self.images = ImageBatcher(transform, self.device)
        self._labels = labels
        self._channels_last = False
        self._folded: tuple[tuple[tuple[int, int], ...], torch.nn.Module] | None = None

    @property
    def labels(self) -> list[str] | None:
        """The pretrained head's class names, where the weights name them (built on first use:
        most users of a backbone never ask)."""
        if callable(self._labels):
            self._labels = self._labels()
        return self._labels

    @property
    def preprocess(self) -> Callable[[Any], torch.Tensor]:
        """The transform from an RGB PIL image to the normalised tensor these weights expect."""
        return self.transform

    def export_plan(self) -> ExportPlan:
        """Noise images of several sizes through the weights' transform: two traced, then batches
        of one, three and seven checked."""
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        sizes = (((320, 240), (240, 320)), ((200, 200),), ((640, 480), (96, 128), (300, 300)),
                 tuple((64 + 16 * i, 96 - 8 * i) for i in range(7)))
        return ExportPlan([self.collate([Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                                         for w, h in batch]) for batch in sizes])

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        if not self._channels_last:
            # CPU and GPU convolutions run faster channels-last; converting here, on first use,
            # keeps it out of load time (3 ms of EfficientNet-Lite0's 100). Outside inference
            # mode, or the weights would become inference tensors that training cannot use.
            with torch.inference_mode(False), torch.no_grad():
                self.model.to(memory_format=torch.channels_last)
            self._channels_last = True
        return batch.to(self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits features of a preprocessed batch."""
        return self.forward_features(self.model, x)

    def forward_features(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logits features of ``x`` through ``net`` (the model, or its folded copy)."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a preprocessed batch from the pretrained head."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return 0

    def encode_batch(self, batch: torch.Tensor, *, pool: str | None = None) -> torch.Tensor:
        import torch

        x = self._to_device(batch)
        if torch.is_grad_enabled() or self.model.training:
            return self.features(x)  # training: the real BatchNorm layers
        return self.forward_features(self._inference_net(x), x)

    def _inference_net(self, x: torch.Tensor) -> torch.nn.Module:
        """The model with BatchNorm folded into its convolutions (see :mod:`zoo.adapters.fold`),
        built on first use and rebuilt when a weight changes in place; the model itself where
        folding finds nothing or its output differs from the model's on ``x``."""
        state = tuple((id(t), t._version) for t in (*self.model.parameters(), *self.model.buffers()))
        if self._folded is not None and self._folded[0] == state:
            return self._folded[1]
        import torch

        net, count = fold_batchnorm(self.model)
        if count:
            reference = self.features(x)
            result = self.forward_features(net, x)
            if not torch.allclose(result.float(), reference.float(), rtol=1e-3, atol=1e-4):
                net = self.model
        else:
            net = self.model
        self._folded = (state, net)
        return net

    def classifier(self) -> tuple[Callable[[Any], torch.Tensor], list[Any]] | None:
        """The weights' own classifier head: logits of a collated batch, and the class names
        (ImageNet's for most; the class indices where the weights name none)."""
        if not self.num_classes:
            return None

        def logits(batch: torch.Tensor) -> torch.Tensor:
            return self.logits(self._to_device(batch))

        return logits, list(self.labels or range(self.num_classes))
