"""Zero-shot classification against the backends called directly: open_clip's own
``build_zero_shot_classifier`` on a tiny random model, sentence-transformers on MiniLM; and
accuracy on real text (Debian's fortunes) with label names only."""

from __future__ import annotations

import json

import numpy as np
import pytest

import zoo
from required_tools import FORTUNES, needs_tool
from zoo.errors import UnsupportedOptionError

LABELS = ["cats", "the stock market", "football"]
TEXTS = ["My kitten sleeps on the sofa.", "Shares fell 3% on Wall Street today.", "The striker scored twice.",
         "Dogs and cats", "hi"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_image_text_matches_open_clips_zero_shot_classifier(open_clip_dir):
    import open_clip
    import torch
    from PIL import Image

    ident = f"local-dir:{open_clip_dir}"
    theirs, _, preprocess = open_clip.create_model_and_transforms(ident, device="cpu")
    theirs.eval()
    tokenizer = open_clip.get_tokenizer(ident)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(4)]
    with torch.no_grad():
        weights = open_clip.build_zero_shot_classifier(theirs, tokenizer, LABELS, open_clip.OPENAI_IMAGENET_TEMPLATES,
                                                       num_classes_per_batch=2)
        features = theirs.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        expected = (theirs.logit_scale.exp() * features @ weights).softmax(-1).numpy()

    ours = zoo.load(str(open_clip_dir), device="cpu")
    from zoo.core._zero_shot import label_vectors

    np.testing.assert_allclose(label_vectors(ours, LABELS), weights.T.numpy(), atol=1e-5)
    probs = ours.classify(images, LABELS)
    assert probs.shape == (4, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert ours.predict(images, labels=LABELS) == [LABELS[i] for i in expected.argmax(1)]


def test_text_model_matches_sentence_transformers(minilm, minilm_dir):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    template = "This text is about {}."
    labels = st.encode([template.format(x) for x in LABELS], normalize_embeddings=True)
    texts = st.encode(TEXTS, normalize_embeddings=True)
    expected = _softmax(20.0 * texts @ labels.T)

    np.testing.assert_allclose(minilm.classify(TEXTS, LABELS, template), expected, atol=1e-5)
    assert minilm.predict(TEXTS[:3], labels=LABELS, template=template) == LABELS
    # Several templates: their embeddings are averaged per label, then re-normalised.
    forms = ["{}", "a text about {}"]
    ens = st.encode([f.format(x) for x in LABELS for f in forms], normalize_embeddings=True).reshape(3, 2, -1).mean(1)
    ens /= np.linalg.norm(ens, axis=1, keepdims=True)
    np.testing.assert_allclose(minilm.classify(TEXTS, LABELS, forms, scale=50), _softmax(50 * texts @ ens.T),
                               atol=1e-5)


@pytest.mark.parametrize(("labels", "template", "error", "needle"), [
    ("cats", None, ValueError, "non-empty list"),
    ([], None, ValueError, "non-empty list"),
    (["a", "a"], None, ValueError, "labels repeat"),
    (LABELS, "no placeholder", ValueError, "has no '{}'"),
    (LABELS, "{} and {}", ValueError, "exactly one '{}'"),
    (LABELS, "a {} of {name}", ValueError, "exactly one '{}'"),
    (LABELS, "unbalanced {} }", ValueError, "exactly one '{}'"),
])
def test_bad_labels_and_templates_are_named(minilm, labels, template, error, needle):
    with pytest.raises(error, match=needle.replace("{", r"\{").replace("}", r"\}")):
        minilm.classify(TEXTS, labels, template)


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0, -1])
def test_a_scale_that_is_not_positive_and_finite_is_refused(minilm, scale):
    with pytest.raises(ValueError, match="positive finite number"):
        minilm.classify(TEXTS, LABELS, scale=scale)


def test_a_model_with_no_text_tower_says_what_to_do_instead():
    model = zoo.load("efficientnet-lite0", device="cpu")
    with pytest.raises(UnsupportedOptionError, match="no text tower.*finetune"):
        model.classify([np.zeros((32, 32, 3), np.uint8)], LABELS)


def test_predict_without_labels_needs_a_head(minilm):
    with pytest.raises(UnsupportedOptionError, match="no classifier head: pass labels="):
        minilm.predict(TEXTS)


@pytest.mark.slow
@needs_tool("fortunes")
def test_label_names_alone_classify_fortunes_well_above_chance(minilm):
    categories = ["computers", "science", "food", "love", "sports", "politics"]
    texts, truth = [], []
    for category in categories:
        quotes = [q.strip() for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
        quotes = [q for q in quotes if 20 < len(q) < 400][:120]
        texts += quotes
        truth += [category] * len(quotes)
    predicted = minilm.predict(texts, labels=categories, progress=False)
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    print(f"zero-shot accuracy on {len(texts)} fortunes, 6 categories: {accuracy:.3f} (chance 0.167)")
    assert accuracy >= 0.5  # 3x chance; bench/bench_zero_shot.py measures the whole corpus


def test_zoo_classify_writes_a_table_with_provenance(minilm, tmp_path):
    import pyarrow.parquet as pq

    from zoo.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "labels.parquet"
    assert main(["classify", "minilm-l6", str(texts), "--labels", ",".join(LABELS), "--template",
                 "This text is about {}.", "-o", str(out), "--device", "cpu", "-q"]) == 0
    table = pq.read_table(out)
    expected = minilm.classify(TEXTS, LABELS, "This text is about {}.")
    assert table.column_names == ["id", "label", "score", *(f"p({x})" for x in LABELS)]
    assert table.column("label").to_pylist() == [LABELS[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(np.stack([table.column(f"p({x})").to_numpy() for x in LABELS], 1), expected, atol=1e-6)
    meta = json.loads(table.schema.metadata[b"zoo"])
    assert meta["model"] == "minilm-l6" and meta["labels"] == LABELS and meta["scale"] == 20.0


def test_zoo_classify_refuses_a_bad_output_before_loading(tmp_path, capsys):
    from zoo.cli import main

    assert main(["classify", "minilm-l6", str(tmp_path), "--labels", "a,b", "-o", str(tmp_path / "x.txt")]) != 0
    assert "write predictions to a .parquet or .csv file" in capsys.readouterr().err
