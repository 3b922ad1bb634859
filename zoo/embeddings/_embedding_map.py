"""A picture of an embedding space: rows projected to 2-D (UMAP if installed, else t-SNE up to
5000 rows, PCA beyond), drawn as an interactive, self-contained HTML scatter (plotly: zoom,
pan, hover showing each row's id with its text or an image thumbnail) or a static PNG."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core._image_files import opened_image
from zoo.errors import ZooError
from zoo.store._atomic import atomic_path

from ._inputs import content_hash

if TYPE_CHECKING:
    import numpy as np

    from ._embedding_file import EmbeddingFile
    from ._inputs import InputSource

METHODS = ("auto", "umap", "tsne", "pca")
TSNE_MAX_ROWS = 5000  # t-SNE's cost grows fast; beyond this PCA (without UMAP installed)
SVG_MAX_ROWS = 10_000  # beyond, points are drawn with WebGL
_THUMB = 96  # pixels, the longer side of a hover thumbnail


def project(rows: np.ndarray, method: str = "auto", *, seed: int = 0, progress: bool = True) -> tuple[np.ndarray, str]:
    """``(N, 2)`` coordinates of ``rows`` and the method used. UMAP and t-SNE take a minute or
    more on a few thousand rows: ``progress`` says on stderr what runs, and how long it took."""
    import numpy as np

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if len(rows) < 3:
        raise ValueError(f"a map needs at least 3 rows, not {len(rows)}")
    if method == "auto":
        try:
            import umap

            method = "umap"
        except ImportError:
            method = "tsne" if len(rows) <= TSNE_MAX_ROWS else "pca"
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ZooError("method 'umap' needs umap-learn: pip install umap-learn (or use --method tsne / pca)") \
                from None

        with _working(f"zoo map: UMAP of {len(rows)} rows", progress):
            return np.asarray(umap.UMAP(random_state=seed).fit_transform(rows)), method
    if method == "tsne":
        from sklearn.manifold import TSNE

        with _working(f"zoo map: t-SNE of {len(rows)} rows", progress):
            return TSNE(perplexity=min(30.0, (len(rows) - 1) / 3), random_state=seed).fit_transform(rows), method
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(rows), method


@contextlib.contextmanager
def _working(what: str, show: bool) -> Iterator[None]:
    """A status line on stderr (tqdm, as zoo's other long steps) while a step with no progress of
    its own runs: what it is when it starts, how long it took when it ends."""
    from tqdm.auto import tqdm

    with tqdm(total=1, desc=what, bar_format="{desc}{postfix} [{elapsed}]", postfix="running",
              disable=not show) as bar:
        yield
        bar.n = 1
        bar.set_postfix_str("done")


def hover_details(ids: Sequence[Any], texts: Sequence[str] | None = None, *,
                  roots: Sequence[str | os.PathLike[str]] = (),
                  columns: Mapping[str, Sequence[Any]] | None = None) -> list[str]:
    """Per row, what the hover shows under its id, as HTML: its text (shortened), or a thumbnail of
    the image file its id names when that file lies under one of ``roots`` (the folders the user
    passed; symlinks are followed before the check), never from any other path an id names; then
    the user's kept ``columns``, one ``name: value`` line each."""
    allowed = [Path(root).resolve() for root in roots]
    details = []
    for i, item in enumerate(ids):
        if texts is not None:
            detail = html.escape(_shorten(texts[i]))
        elif isinstance(item, str) and allowed and _under(item, allowed) and os.path.isfile(item):
            detail = _thumbnail(item)
        else:
            detail = ""
        for name, values in (columns or {}).items():
            if values[i] is not None:
                detail += f"<br><b>{html.escape(str(name))}</b>: {html.escape(_shorten(str(values[i])))}"
        details.append(detail.removeprefix("<br>"))
    return details


def matching_texts(embeddings: EmbeddingFile, source: InputSource, name: str) -> list[str]:
    """Each row's text from ``source`` (by id), refused where a text is not the one embedded: its
    hash differs from the row's recorded ``content_sha256``, so the hover would show another row's
    text."""
    by_id = {str(i): item for i, item in source}
    texts = [str(by_id.get(str(i), "")) for i in embeddings.ids]
    for position, (row_id, recorded) in enumerate(zip(embeddings.ids, embeddings.hashes or [])):
        if str(row_id) in by_id and recorded and content_hash(by_id[str(row_id)], source.kind) != recorded:
            raise ZooError(f"--inputs {name}: the text of id {row_id} is not the one embedded in row {position} "
                           f"of {embeddings.path.name} (its sha256 differs from the row's content_sha256): pass "
                           "the file the embeddings were made from")
    return texts


def _under(file: str, roots: Sequence[Path]) -> bool:
    real = Path(file).resolve()
    return any(real.is_relative_to(root) for root in roots)


def check_map_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if a map can be written there (``.html`` or ``.png``); checked before any work."""
    out = Path(path)
    if out.suffix.lower() not in (".html", ".png"):
        raise ValueError(f"{out}: write a map to a .html or .png file")
    return out


def write_map(path: str | os.PathLike[str], xy: np.ndarray, ids: Sequence[Any], *, details: Sequence[str] = (),
              colors: Sequence[Any] | None = None, title: str = "") -> Path:
    """Write the map as ``.html`` (interactive) or ``.png`` (static), atomically."""
    out = check_map_output(path)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".png":
            _write_png(tmp, xy, colors, title)
        else:
            _write_html(tmp, xy, ids, details, colors, title)
    return out


def _write_html(path: Path, xy: np.ndarray, ids: Sequence[Any], details: Sequence[str],
                colors: Sequence[Any] | None, title: str) -> None:
    import plotly.graph_objects as go

    figure = go.Figure(layout={"title": title, "template": "plotly_white", "height": 760,
                               "margin": {"l": 20, "r": 20, "t": 60, "b": 20}, "legend": {"itemsizing": "constant"}})
    groups = {"": list(range(len(ids)))} if colors is None else _by_value(colors)
    # SVG draws anywhere (a headless browser with no GPU too); WebGL keeps 100k points fluid.
    add = figure.add_scatter if len(ids) <= SVG_MAX_ROWS else figure.add_scattergl
    for name, members in groups.items():
        add(x=xy[members, 0], y=xy[members, 1], mode="markers", name=str(name),
                             marker={"size": 7, "opacity": 0.8}, showlegend=colors is not None,
                             customdata=[[str(ids[i]), details[i] if details else ""] for i in members],
                             hovertemplate="%{customdata[0]}<extra></extra>")
    # The hover panel shows the text or the thumbnail beside the plot: plotly's own hover box
    # cannot show an image.
    panel = ("<div id='zoo-hover' style='font:14px sans-serif;max-width:700px;padding:8px;min-height:120px'>"
             "hover a point</div>")
    script = ("var p=document.getElementsByClassName('plotly-graph-div')[0],h=document.getElementById('zoo-hover');"
              "p.on('plotly_hover',function(e){var d=e.points[0].customdata;"
              "h.innerHTML='<b>'+d[0].replace(/</g,'&lt;')+'</b><br>'+d[1];});")
    page = figure.to_html(include_plotlyjs=True, full_html=True, post_script=script)
    # Before the plot: plotly's script (and the handler in it) runs where the plot's div is, and the
    # panel must exist by then.
    path.write_text(page.replace("<body>", "<body>" + panel, 1), encoding="utf-8")


def _write_png(path: Path, xy: np.ndarray, colors: Sequence[Any] | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    groups = {"": list(range(len(xy)))} if colors is None else _by_value(colors)
    for name, members in groups.items():
        ax.scatter(xy[members, 0], xy[members, 1], s=10, alpha=0.8, label=str(name) if colors is not None else None)
    if colors is not None:
        ax.legend(markerscale=2, fontsize=8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _by_value(values: Sequence[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(value, []).append(i)
    return groups


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _thumbnail(file: str) -> str:
    """A small JPEG of the image, inline; none for a file that is not an image zoo reads, and none
    (named in a warning) for one over PIL's pixel limit."""
    import warnings

    try:
        with opened_image(file) as image:
            image.thumbnail((_THUMB, _THUMB))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except ValueError as exc:
        warnings.warn(f"no thumbnail for {file}: {exc}", UserWarning, stacklevel=3)
        return ""
    except OSError:  # not an image zoo reads, or unreadable: the hover shows the id alone
        return ""
    return f"<img src='data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def describe(method: str, count: int, provenance: dict[str, Any]) -> str:
    """The map's title: what was projected, how."""
    return f"{count} rows of {provenance.get('model', 'embeddings')}, {method.upper()}"

