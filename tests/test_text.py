"""MiniLM through zoo against transformers and sentence-transformers called directly."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.errors import InputError

SENTENCES = [
    "eating food",
    "eating bread",
    "a girl carrying a baby",
    "A man is riding a white horse on an enclosed ground.",
    "",
    "The new movie is so great, I would watch it again and again and again " * 20,  # truncated at 256
    "Ünïcödé and emoji 🦒 survive tokenisation",
]


def _direct_transformers(folder, texts):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_minilm_matches_transformers_masked_mean(minilm, minilm_dir):
    ours = minilm.featurize(SENTENCES, batch_size=3)
    theirs = _direct_transformers(minilm_dir, SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    assert _cosines(ours, theirs).min() >= 0.9999


def test_minilm_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    theirs = st.encode(SENTENCES, batch_size=3, convert_to_numpy=True)
    ours = minilm.featurize(SENTENCES, batch_size=3)
    assert _cosines(ours, theirs).min() >= 0.9999


def test_similarity_ranking(minilm):
    query, bread, baby = minilm.featurize(["eating food", "eating bread", "a girl carrying a baby"])
    assert query @ bread > query @ baby + 0.3


def test_output_rows_follow_input_order_whatever_the_batching(minilm):
    one_by_one = np.stack([minilm.featurize([s])[0] for s in SENTENCES])
    for batch_size in (1, 2, 32):
        np.testing.assert_allclose(minilm.featurize(SENTENCES, batch_size=batch_size), one_by_one, atol=2e-6)


def test_empty_input_gives_zero_rows(minilm):
    out = minilm.featurize([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_non_string_item_names_index_and_type(minilm):
    with pytest.raises(InputError, match=r"input 2: TypeError: expected str, got int"):
        minilm.featurize(["a", "b", 3])
    with pytest.raises(TypeError, match="wrap a single item"):
        minilm.featurize("just one string")


def test_skip_bad_items_and_report_them(minilm):
    with pytest.warns(RuntimeWarning, match="skipped 2 of 4"):
        out = minilm.featurize(["a", None, "b", b"bytes"], on_error="skip")
    assert out.shape == (2, 384)
    assert minilm.last_report.kept == [0, 2]
    assert [i for i, _ in minilm.last_report.skipped] == [1, 3]
    np.testing.assert_allclose(out, minilm.featurize(["a", "b"]), atol=2e-6)


def test_normalize_pool_and_tensor_options(minilm):
    import torch

    raw = minilm.featurize(["hello world"], normalize=False)
    assert abs(np.linalg.norm(raw) - 1) > 1e-3
    np.testing.assert_allclose(raw / np.linalg.norm(raw), minilm.featurize(["hello world"]), atol=1e-6)
    cls = minilm.featurize(["hello world"], pool="cls")
    assert not np.allclose(cls, minilm.featurize(["hello world"]))
    pt = minilm.featurize(["hello world"], return_tensors="pt")
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32
    with pytest.raises(ValueError, match="did you mean 'mean'"):
        minilm.featurize(["x"], pool="maen")


def test_preprocessing_travels_with_the_weights(minilm):
    assert minilm.preprocess.__class__.__name__.startswith("BertTokenizer")
    assert minilm.encoder.max_length == 256
    assert minilm.files.verified  # every pinned file was checked


def test_model_is_frozen_in_eval_mode(minilm):
    minilm.model.train()
    minilm.featurize(["x"])
    assert not minilm.model.training


def test_bfloat16_compute_gives_float32_output():
    model = zoo.load("minilm-l6", device="cpu", dtype="bfloat16")
    out = model.featurize(["eating food", "eating bread"])
    assert out.dtype == np.float32
    ref = zoo.load("minilm-l6", device="cpu").featurize(["eating food", "eating bread"])
    assert _cosines(out, ref).min() > 0.98


@pytest.mark.slow
def test_save_and_load_round_trip(minilm, tmp_path):
    folder = minilm.save(tmp_path / "saved")
    again = zoo.load(folder)
    assert again.spec.pooling == "mean" and again.spec.normalize is True
    np.testing.assert_array_equal(again.featurize(SENTENCES), minilm.featurize(SENTENCES))
    assert set(again.files.verified) >= {"model.safetensors", "config.json"}


def test_plain_hugging_face_folder_reads_sentence_transformers_settings(minilm, minilm_dir):
    folder_model = zoo.load(str(minilm_dir))
    assert (folder_model.spec.pooling, folder_model.spec.normalize, folder_model.encoder.max_length) == ("mean", True, 256)
    np.testing.assert_array_equal(folder_model.featurize(SENTENCES), minilm.featurize(SENTENCES))


def test_trust_remote_code_is_off_unless_asked(monkeypatch, minilm_dir):
    from transformers import AutoModel

    seen = {}
    original = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    zoo.load("minilm-l6")
    assert seen["trust_remote_code"] is False and seen["local_files_only"] is True
