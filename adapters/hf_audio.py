"""transformers audio encoders (wav2vec2, HuBERT, WavLM, Whisper's encoder, AST) through their own
feature extractors; frame features are mean-pooled over the frames that hold real audio.

A row never depends on the clips batched with it: extractors that return an attention mask pad
with it, Whisper and AST pad every clip to their fixed window as their extractors do, and models
whose extractor takes no mask (group-norm wav2vec2 / HuBERT, whose statistics would include the
padding) are batched only with clips of the same length."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.core._encoder import Built

from .audio import AudioAdapter
from .transformers import TransformersFamily, load_model_and_processor

if TYPE_CHECKING:
    import torch

    from zoo.catalog._spec import ModelSpec
    from zoo.store._model_files import ModelFiles


class HFAudioAdapter(TransformersFamily, AudioAdapter):
    """A transformers audio encoder; ``pool`` is ``mean`` over valid frames or ``pooler`` (AST)."""

    pooling_modes = ("mean", "pooler")

    def __init__(self, spec: ModelSpec, model: Any, *, extractor: Any, **kwargs: Any) -> None:
        super().__init__(spec, model, **kwargs)
        self.extractor = extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.is_whisper = model.config.model_type == "whisper"
        # Whisper's and AST's extractors pad every clip to one fixed length themselves.
        fixed = self.is_whisper or model.config.model_type == "audio-spectrogram-transformer"
        self.pads_exactly = fixed or bool(getattr(extractor, "return_attention_mask", False))
        self._padding: dict[str, Any] = {} if fixed else {"padding": True}
        if model.config.model_type == "audio-spectrogram-transformer":
            # AST's extractor keeps max_length frames of 10 ms: longer clips run as windows of that.
            self.window_seconds = int(extractor.max_length) * 0.01

    @classmethod
    def _build(cls, spec: ModelSpec, files: ModelFiles, *, device: str, dtype: torch.dtype,
               trust_remote_code: bool = False) -> Built:
        from transformers import AutoFeatureExtractor, AutoModel

        model, extractor = load_model_and_processor(files.root, AutoModel, AutoFeatureExtractor, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        if model.config.model_type == "whisper":
            model = model.get_encoder()  # the decoder is not needed for embeddings
        default_pool = "pooler" if model.config.model_type == "audio-spectrogram-transformer" else "mean"
        changes = {"pooling": spec.pooling or default_pool,
                   "preprocessing": {"sampling_rate": int(extractor.sampling_rate), **spec.preprocessing}}
        return Built(model, int(getattr(model.config, "hidden_size", 0) or model.config.d_model), changes,
                     {"extractor": extractor})

    @property
    def preprocess(self) -> Any:
        """The feature extractor these weights expect (raw waveform or log-mel front end)."""
        return self.extractor

    def collate(self, items: list[tuple[Any, int]]) -> tuple[dict[str, Any], list[int]]:
        """The extractor's own features: padded to the longest clip with a mask, or to the model's
        fixed window (Whisper's 30 s, AST's frames) as the extractor does by default."""
        waves = [self.resample(item).numpy() for item in items]
        inputs = self.extractor(waves, sampling_rate=self.sample_rate, return_tensors="pt", **self._padding)
        return dict(inputs), [len(w) for w in waves]

    def _valid_frames(self, n_frames: int, lengths: list[int]) -> torch.Tensor:
        import torch

        if self.is_whisper:  # 10 ms mel hop, then a stride-2 convolution
            counts = [min(n_frames, -(-n // (self.extractor.hop_length * 2))) for n in lengths]
        elif hasattr(self.model, "_get_feat_extract_output_lengths"):
            counts = self.model._get_feat_extract_output_lengths(torch.tensor(lengths)).tolist()
        else:
            counts = [n_frames] * len(lengths)
        frames = torch.arange(n_frames)
        return (frames[None, :] < torch.tensor(counts)[:, None]).to(self.device)

    def encode_batch(self, batch: tuple[dict[str, Any], list[int]], *, pool: str | None = None) -> torch.Tensor:
        inputs, lengths = batch
        dtype = next(self.model.parameters()).dtype
        inputs = {k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        out = self.model(**inputs)
        if pool == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise ValueError(f"{self.name} has no pooler output; use pool='mean'")
            return out.pooler_output.float()
        hidden = out.last_hidden_state.float()
        mask = self._valid_frames(hidden.shape[1], lengths).unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
