"""The user's own columns travel with the vectors: ``zoo embed --id-column / --keep-columns`` into
the embedding file, then into ``zoo search`` hits, ``zoo dedup`` groups and their CLI output."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from zoo.cli import main
from zoo.embeddings._embed import embed_to_file
from zoo.embeddings._inputs import open_inputs
import zoo
from zoo.errors import ZooError

ROWS = [
    {"sku": "A-1", "text": "A cat sleeps on the warm sofa.", "price": 3.5, "url": "https://x/a"},
    {"sku": "B-2", "text": "Stocks fell sharply on Wall Street.", "price": 10.0, "url": "https://x/b"},
    {"sku": "C-3", "text": "The striker scored twice.", "price": None, "url": "https://x/c"},
    {"sku": "D-4", "text": "A cat sleeps on the warm sofa.", "price": 1.25, "url": "https://x/d"},
]


@pytest.fixture
def products(tmp_path):
    path = tmp_path / "products.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_ids_and_kept_columns_are_written_beside_the_rows_whatever_the_precision(minilm, products, tmp_path):
    for precision in ("float32", "int8"):
        out = tmp_path / f"emb-{precision}.parquet"
        inputs = open_inputs(str(products), id_column="sku", keep=("price", "url", "text"))
        embed_to_file(minilm, inputs, out, progress=False, chunk_size=3,
                      options=minilm.embed_options(precision=precision))
        table = pq.read_table(out)
        assert table.column_names == ["id", "embedding", "content_sha256", "price", "url", "text"]
        assert table.column("id").to_pylist() == [r["sku"] for r in ROWS]
        assert table.column("price").to_pylist() == [r["price"] for r in ROWS]  # a null stays null, typed float
        assert str(table.schema.field("price").type) == "double"
        assert table.column("text").to_pylist() == [r["text"] for r in ROWS]
    rows = np.stack(pq.read_table(tmp_path / "emb-float32.parquet").column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(rows, minilm.featurize([r["text"] for r in ROWS]), atol=1e-5)


def test_a_repeated_or_empty_id_is_refused_before_anything_is_written(minilm, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("key,text\n1,a\n2,b\n1,c\n")
    out = tmp_path / "out.parquet"
    with pytest.raises(ZooError, match=r"row 2 has id '1' again in column 'key'; ids must be unique"):
        embed_to_file(minilm, open_inputs(str(path), id_column="key"), out, progress=False)
    assert not out.exists() and not (tmp_path / "out.parquet.partial").exists()


def test_columns_a_source_does_not_have_are_refused_by_name(minilm, products, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n")
    with pytest.raises(ZooError, match="one column to keep, text"):
        open_inputs(str(lines), keep=("title",))
    with pytest.raises(ZooError, match="already has a column of that name"):
        open_inputs(str(products), keep=("embedding",))
    with pytest.raises(ZooError, match="no column 'titel'"):
        embed_to_file(minilm, open_inputs(str(products), keep=("titel",)), tmp_path / "o.parquet", progress=False)
    with pytest.raises(ZooError, match=r"a \.npy file holds the rows only"):
        embed_to_file(minilm, open_inputs(str(products), id_column="sku"), tmp_path / "o.npy", progress=False)
    out = tmp_path / "lines.parquet"
    embed_to_file(minilm, open_inputs(str(lines), keep=("text",)), out, progress=False)
    assert pq.read_table(out).column("text").to_pylist() == ["one", "two"]


def test_kept_columns_travel_into_search_and_dedup_output(minilm, products, tmp_path, capsys):
    pytest.importorskip("faiss")
    from zoo import search
    from zoo.duplicates import find_duplicates

    emb = tmp_path / "emb.parquet"
    assert main(["embed", "minilm-l6", str(products), "-o", str(emb), "--id-column", "sku",
                 "--keep-columns", "url,price", "-q"]) == 0
    capsys.readouterr()
    index = search.build(emb, tmp_path / "idx")
    hit = index.search(["the stock market"], k=1, model=minilm)[0][0]
    assert (hit.id, hit.fields) == ("B-2", {"url": "https://x/b", "price": 10.0})
    reopened = search.open_index(tmp_path / "idx").search(["a football match"], k=1, model=minilm)[0][0]
    assert (reopened.id, reopened.fields) == ("C-3", {"url": "https://x/c", "price": None})
    assert main(["search", str(tmp_path / "idx"), "the stock market", "-k", "1"]) == 0
    assert "B-2  emb.parquet  url='https://x/b'  price='10.0'" in capsys.readouterr().out
    groups = find_duplicates(emb, threshold=1.0)
    assert [(g.ids, g.fields) for g in groups] == [(["A-1", "D-4"], [{"url": "https://x/a", "price": 3.5},
                                                                      {"url": "https://x/d", "price": 1.25}])]
    assert main(["dedup", str(emb), "--threshold", "1.0"]) == 0
    shown = capsys.readouterr().out
    assert "  A-1  url='https://x/a'  price='3.5'" in shown and "  D-4  url='https://x/d'" in shown
    assert main(["dedup", str(emb), "--threshold", "1.0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["fields"][1] == {"url": "https://x/d", "price": 1.25}


def test_kept_columns_show_on_the_map_and_color_it(minilm, products, tmp_path, capsys):
    pytest.importorskip("plotly")
    from zoo.embeddings._embedding_map import hover_details

    details = hover_details(["A-1", "B-2"], ["a <cat>", "stocks"], columns={"url": ["https://x/a", None]})
    assert details == ["a &lt;cat&gt;<br><b>url</b>: https://x/a", "stocks"]
    emb = tmp_path / "emb.parquet"
    rows = [{**row, "shop": ["north", "south"][i % 2]} for i, row in enumerate(ROWS)]
    products.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["embed", "minilm-l6", str(products), "-o", str(emb), "--id-column", "sku",
                 "--keep-columns", "text,url,shop", "-q"]) == 0
    page = tmp_path / "map.html"
    assert main(["map", str(emb), "-o", str(page), "--color", "shop", "--method", "pca"]) == 0
    assert "colored by shop" in capsys.readouterr().out
    html = page.read_text()
    assert "Stocks fell sharply on Wall Street." in html  # the kept text, with no --inputs
    shown = json.loads(f'"{html[html.index("Stocks fell"):].split(chr(34))[0]}"')  # the row's hover, as plotly wrote it
    assert shown == "Stocks fell sharply on Wall Street.<br><b>url</b>: https://x/b<br><b>shop</b>: south"


@pytest.mark.slow
def test_column_types_come_from_every_row_and_mixed_ones_are_refused_before_writing(minilm, tmp_path):
    late = tmp_path / "late.jsonl"
    rows = [{"id": i, "text": f"text {i}", "score": None} for i in range(1001)] + [
        {"id": "x-1", "text": "last", "score": 0.5}]
    late.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "late.parquet"
    with pytest.raises(ZooError, match="column 'id' holds values of more than one type"):
        embed_to_file(minilm, open_inputs(str(late), id_column="id", keep=("score",)), out, progress=False)
    assert not out.exists() and not (tmp_path / "late.parquet.partial").exists()
    embed_to_file(minilm, open_inputs(str(late), keep=("score",)), out, progress=False, chunk_size=500)
    assert str(pq.read_schema(out).field("score").type) == "double"  # the one value after 1001 nulls


def test_an_add_refused_for_its_column_types_leaves_the_index_as_it_was(minilm, tmp_path):
    pytest.importorskip("faiss")
    from zoo import search

    def embedded(name, prices):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{name} {i}", "price": p}) + "\n" for i, p in enumerate(prices)))
        embed_to_file(minilm, open_inputs(str(path), keep=("price",)), tmp_path / f"{name}.parquet", progress=False)
        return tmp_path / f"{name}.parquet"

    index = search.build(embedded("a", [1, 2]), tmp_path / "idx")
    with pytest.raises(ZooError, match="column 'price' is string, the index .* holds it as int64"):
        index.add(embedded("b", ["cheap", "dear"]))
    again = search.open_index(tmp_path / "idx")
    assert len(again) == 2 and again.columns == {"price": [1, 2]}
    assert again.add(embedded("c", [3])) == 1
    assert search.open_index(tmp_path / "idx").columns == {"price": [1, 2, 3]}
    binary = tmp_path / "bits.parquet"
    embed_to_file(minilm, open_inputs(str(tmp_path / "c.jsonl")), binary, progress=False,
                  options=minilm.embed_options(precision="binary"))
    with pytest.raises(zoo.ProvenanceMismatchError, match="binary and non-binary rows score on different scales"):
        again.add(binary)
