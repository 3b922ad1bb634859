"""zoo map: an HTML map opened in a real browser (headless Chromium, Debian's package), and a PNG.

How "the screenshot shows the points" is checked: the page is rendered to a PNG by Chromium; the
test counts the pixels within a small distance of each trace's marker colour (plotly's first
colours, one trace per label). A blank or broken page (no plotly, a script error) has none of
them; a drawn map has hundreds per trace, spread over the plot area rather than in one spot.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from required_tools import FORTUNES, needs_tool, require_tool
from zoo.cli import main
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._inputs import open_inputs

pytest.importorskip("plotly")
# plotly's first three colours, as the markers (opacity 0.8) show them on the white background
TRACE_COLORS = [tuple(round(0.8 * c + 0.2 * 255) for c in rgb)
                for rgb in ((0x63, 0x6E, 0xFA), (0xEF, 0x55, 0x3B), (0x00, 0xCC, 0x96))]


@pytest.fixture
def fortunes_map_inputs(minilm, tmp_path):
    require_tool("fortunes")
    texts, labels = [], []
    for category in ("science", "food", "sports"):
        quotes = [" ".join(q.split()) for q in (FORTUNES / category).read_text(errors="replace").split("\n%\n")]
        quotes = [q for q in quotes if 20 < len(q) < 300][:80]
        texts += quotes
        labels += [category] * len(quotes)
    (tmp_path / "quotes.txt").write_text("\n".join(texts) + "\n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "quotes.txt")), tmp_path / "quotes.parquet", progress=False)
    (tmp_path / "labels.csv").write_text("id,category\n" + "".join(f"{i},{c}\n" for i, c in enumerate(labels)))
    return tmp_path


def _hover_a_point(page, screenshot) -> tuple[int, str, list]:
    """Open ``page`` in Chromium and move the mouse over its most isolated point, as a person
    would: ``(that point's row, what the hover panel then shows, the console's errors)``."""
    from cdp import Browser

    with Browser() as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.querySelectorAll('.scatterlayer .point').length > 0")
        # the most isolated point, so the pointer is over that one row alone
        target, x, y = browser.evaluate("""(() => {
            const c = [...document.querySelectorAll('.scatterlayer .point')].map(p => {
                const r = p.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; });
            let best = 0, far = -1;
            c.forEach(([x, y], i) => { const d = Math.min(...c.filter((_, j) => j !== i)
                .map(([u, v]) => Math.hypot(u - x, v - y))); if (d > far) { far = d; best = i; } });
            return [best, ...c[best]]; })()""")
        browser.move_mouse(x, y)
        shown = browser.wait_for("(() => { const t = document.getElementById('zoo-hover').innerText;"
                                 " return t.startsWith('hover') ? '' : t; })()")
        browser.screenshot(screenshot)
        return target, shown, browser.errors()


@pytest.mark.slow
@needs_tool("chromium")
def test_hovering_a_point_shows_the_columns_zoo_embed_kept(minilm, tmp_path):
    import json

    rows = [{"sku": f"S-{i}", "text": text, "url": f"https://shop/{i}"} for i, text in enumerate(
        ["A cat sleeps on the sofa.", "Stocks fell on Wall Street.", "The striker scored twice.",
         "Bake the bread for forty minutes.", "A rocket lifts off at dawn.", "Rain all week in the hills."])]
    (tmp_path / "shop.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["embed", "minilm-l6", str(tmp_path / "shop.jsonl"), "-o", str(tmp_path / "shop.parquet"),
                 "--id-column", "sku", "--keep-columns", "text,url", "-q"]) == 0
    page = tmp_path / "map.html"
    assert main(["map", str(tmp_path / "shop.parquet"), "-o", str(page), "--method", "pca"]) == 0
    target, shown, errors = _hover_a_point(page, tmp_path / "hover.png")
    assert shown.split("\n") == [rows[target]["sku"], rows[target]["text"], f"url: {rows[target]['url']}"]
    assert not errors, errors


@pytest.mark.slow
@needs_tool("chromium")
def test_hovering_a_point_in_chromium_shows_that_rows_text(fortunes_map_inputs):
    """The mouse moves over a drawn point, as a person's would, and the panel shows that row's id
    and text, with no error in the page's console."""
    folder = fortunes_map_inputs
    page = folder / "map.html"
    assert main(["map", str(folder / "quotes.parquet"), "-o", str(page), "--inputs", str(folder / "quotes.txt"),
                 "--method", "pca"]) == 0
    texts = (folder / "quotes.txt").read_text().splitlines()
    target, shown, errors = _hover_a_point(page, folder / "hover.png")
    row_id, text = shown.split("\n", 1)
    assert int(row_id) == target  # one trace: its points are the rows in order
    assert " ".join(texts[target].split())[:60] == text[:60], (row_id, text)
    assert not errors, errors


@pytest.mark.slow
@needs_tool("chromium")
def test_the_html_map_renders_points_in_headless_chromium(fortunes_map_inputs):
    from PIL import Image

    folder = fortunes_map_inputs
    page = folder / "map.html"
    assert main(["map", str(folder / "quotes.parquet"), "-o", str(page), "--inputs", str(folder / "quotes.txt"),
                 "--color", "category", "--table", str(folder / "labels.csv"), "--method", "pca"]) == 0
    html = page.read_text()
    assert "plotly" in html and "zoo-hover" in html  # plotly's script is in the page
    assert "src=\"https://" not in html  # no script fetched from the network
    first = (folder / "quotes.txt").read_text().splitlines()[0]
    assert first.split()[0] in html  # the hover panel's texts are in the page
    shot = folder / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1100,900", "--virtual-time-budget=10000", f"--screenshot={shot}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for color in TRACE_COLORS:
        near = np.abs(pixels - np.array(color)).sum(axis=2) < 60
        ys, xs = np.nonzero(near)
        assert near.sum() > 200, f"trace colour {color}: {near.sum()} pixels; the map did not draw"
        assert xs.std() > 20 and ys.std() > 20, f"trace colour {color} sits in one spot, not scattered points"


@pytest.mark.slow
def test_a_static_png_map(fortunes_map_inputs):
    from PIL import Image

    out = fortunes_map_inputs / "map.png"
    assert main(["map", str(fortunes_map_inputs / "quotes.parquet"), "-o", str(out), "--method", "pca"]) == 0
    with Image.open(out) as image:
        assert image.size[0] > 500 and len(np.unique(np.asarray(image.convert("L")))) > 10


def test_a_file_zoo_did_not_write_is_refused(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "other.parquet")
    assert main(["map", str(tmp_path / "other.parquet"), "-o", str(tmp_path / "m.html")]) != 0
    assert "not written by `zoo embed`" in capsys.readouterr().err


def test_hover_shows_a_thumbnail_for_an_image_and_escaped_text_for_a_text(tmp_path):
    import base64
    import io

    from PIL import Image

    from zoo.embeddings._embedding_map import hover_details

    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(tmp_path / "a.png")
    image_detail, missing = hover_details([str(tmp_path / "a.png"), str(tmp_path / "gone.png")], roots=[tmp_path])
    payload = image_detail.split("base64,")[1].rstrip("'>")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as thumb:
        assert max(thumb.size) == 96
    assert missing == ""
    assert hover_details([0], ["<b>fish</b> & chips"]) == ["&lt;b&gt;fish&lt;/b&gt; &amp; chips"]


def test_thumbnails_come_only_from_the_folders_the_user_passed(tmp_path):
    from PIL import Image

    from zoo.embeddings._embedding_map import hover_details

    inside, outside = tmp_path / "photos", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    Image.new("RGB", (40, 30), "red").save(inside / "a.png")
    Image.new("RGB", (40, 30), "blue").save(outside / "secret.png")
    (inside / "link.png").symlink_to(outside / "secret.png")
    ids = [str(inside / "a.png"), str(outside / "secret.png"), str(inside / "link.png"),
           str(inside / ".." / "private" / "secret.png")]
    shown = hover_details(ids, roots=[inside])
    assert shown[0].startswith("<img") and shown[1:] == ["", "", ""]
    assert hover_details(ids) == ["", "", "", ""]  # no folder passed: ids only


def test_an_oversized_image_gets_no_thumbnail_and_is_named(tmp_path, monkeypatch):
    from PIL import Image

    from zoo.embeddings._embedding_map import hover_details

    Image.new("RGB", (300, 300), "red").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.warns(UserWarning, match=r"no thumbnail for .*big\.png: .*MAX_IMAGE_PIXELS"):
        assert hover_details([str(tmp_path / "big.png")], roots=[tmp_path]) == [""]


def test_inputs_whose_texts_are_not_the_embedded_ones_are_refused(minilm, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("first line\nsecond line\nthird line\n")
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    (tmp_path / "other.txt").write_text("first line\nsecond line, edited\nthird line\n")
    assert main(["map", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "m.html"), "--inputs",
                 str(tmp_path / "other.txt"), "--method", "pca"]) == 1
    err = capsys.readouterr().err
    assert "the text of id 1 is not the one embedded in row 1" in err and not (tmp_path / "m.html").exists()


def test_umap_without_umap_learn_says_what_to_install(monkeypatch):
    import builtins

    import zoo
    from zoo.embeddings._embedding_map import project

    real_import = builtins.__import__

    def no_umap(name, *args, **kwargs):
        if name == "umap":
            raise ImportError("No module named 'umap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    rows = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(zoo.ZooError, match="pip install umap-learn"):
        project(rows, "umap")
    assert project(rows, "auto")[1] == "tsne"  # auto takes the next method without it


def test_zoo_map_says_what_it_runs_while_t_sne_works(minilm, tmp_path, capsys):
    """t-SNE takes about a minute on 800 rows and has no progress of its own: zoo map says on stderr
    what runs, then that it is done and how long it took. PCA is quick and says nothing."""
    (tmp_path / "t.txt").write_text("".join(f"line number {i}\n" for i in range(12)))
    embed_to_file(minilm, open_inputs(str(tmp_path / "t.txt")), tmp_path / "t.parquet", progress=False)
    capsys.readouterr()
    assert main(["map", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "m.png"), "--method", "tsne"]) == 0
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("zoo map: t-SNE of 12 rows, done [00:"), last
    assert main(["map", str(tmp_path / "t.parquet"), "-o", str(tmp_path / "m.png"), "--method", "pca"]) == 0
    assert "zoo map" not in capsys.readouterr().err


def test_umap_says_what_it_runs_and_progress_false_says_nothing(monkeypatch, capsys):
    """UMAP (a stand-in with umap-learn's interface: the package is optional) gets the same line."""
    import sys
    import types

    from zoo.embeddings._embedding_map import project

    class UMAP:
        def __init__(self, random_state: int) -> None:
            self.random_state = random_state

        def fit_transform(self, rows: np.ndarray) -> np.ndarray:
            print("fitting", file=sys.stderr)
            return rows[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    rows = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    assert project(rows, "umap")[1] == "umap"
    err = capsys.readouterr().err.replace("\r", "\n")
    assert err.index("zoo map: UMAP of 10 rows, running") < err.index("fitting") < err.index(
        "zoo map: UMAP of 10 rows, done")
    project(rows, "umap", progress=False)
    assert "zoo map" not in capsys.readouterr().err
