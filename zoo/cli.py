"""The ``zoo`` command line (also ``python -m zoo``).

``zoo list``, ``zoo info`` and ``zoo plugins`` never import torch; only commands that run a model do.
``zoo cache`` alone imports huggingface_hub (a third of a second), so it is imported there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.catalog._loader import load, pull, resolve, verify
from zoo.catalog._plugin_manager import get_plugin_manager
from zoo.catalog._registry import CATALOGUE_OWNER, Owner, call_registration_hook, get_registry
from zoo.catalog._scores import METRICS
from zoo.catalog._spec import a_kind
from zoo.core._compiled import RUNTIMES
from zoo.core._embed_options import LAYER_MERGES, ROLES, embedded_as
from zoo.core._predictions import check_predictions_output, write_predictions
from zoo.core._quantize import PRECISIONS
from zoo.core._zero_shot import logit_scale
from zoo.embeddings._embed import check_embedding_output, default_workers, embed_to_file
from zoo.embeddings._embedding_file import read_embeddings
from zoo.embeddings._embedding_map import check_map_output, describe, hover_details, matching_texts, project, write_map
from zoo.embeddings._inputs import open_inputs
from zoo.embeddings._tables import is_table, iter_rows
from zoo.store._bundle import pack, unpack
from zoo.store._provenance import weights_provenance
from zoo.store._settings import zoo_home
from zoo.training._config import (
    CONTRASTIVE_LOSSES,
    HEADS,
    OBJECTIVES,
    SCHEDULES,
    STRATEGIES,
    TRAINING_PRECISIONS,
    FinetuneConfig,
)

from . import __version__
from .core._text_table import text_table
from .duplicates import DEFAULT_THRESHOLD, find_duplicates
from .errors import InputError, RegistryError, ZooError
from .hookspecs import RegisterCommand, hookimpl
from .search import META_FILE as INDEX_META_FILE
from .search import build as build_index
from .search import open_index
from .serve import serve
from .testing import check, format_table


def cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    names = registry.list_models(args.pattern, args.modality, args.sort)
    specs = [registry.specs[n] for n in names]
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    if not specs:
        print("no models match", file=sys.stderr)
        return 0
    score = [args.sort] if args.sort else []  # the sorted metric's column, after the name
    rows = [[s.name, *(f"{s.scores[m]['value']:g}" for m in score), s.modality, s.backend,
             "rerank" if s.kind == "reranker" else str(s.embed_dim or "?"), s.description] for s in specs]
    print(text_table(rows, ["name", *score, "modality", "backend", "dim", "description"]))
    if args.sort:
        print(f"\n{args.sort}: {METRICS[args.sort].description if args.sort in METRICS else args.sort}, as "
              "published (sources: zoo info NAME)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    spec = resolve(args.name)
    print(json.dumps(spec.to_dict(), indent=2))
    if spec.modality == "unknown":
        print(f"the modality of {spec.name} is decided by its config.json, which is neither cached here nor "
              f"reachable; `zoo pull {spec.name}` where the hub can be reached, then ask again", file=sys.stderr)
    return 0


def _registered_by(registry: Any, plugin: str) -> str:
    """``"3 models, 1 adapters"``: what the plugin named ``plugin`` registered."""
    counts = [(label, sum(1 for owner in owners if owner.plugin == plugin)) for label, owners in (
        ("models", registry.owners.values()),
        ("kinds", [k.owner for k in registry.kinds.values()]),
        ("adapters", [a.owner for a in registry.adapters.values()]),
        ("modalities", [m.owner for m in registry.modalities.values()]),
    )]
    return ", ".join(f"{n} {label}" for label, n in counts if n) or "-"


def cmd_plugins(args: argparse.Namespace) -> int:
    if args.action == "check":
        return cmd_plugins_check(args)
    if args.action is not None:
        raise ZooError(f"unknown plugins action {args.action!r}; use `zoo plugins` or `zoo plugins check NAME`")

    registry = get_registry()
    rows = [[info.dist or info.name, info.version or ("built-in" if info.builtin else ""),
             _registered_by(registry, info.name), ", ".join(info.hooks)] for info in get_plugin_manager().infos()]
    catalogue = sum(1 for owner in registry.owners.values() if owner == CATALOGUE_OWNER)
    rows.append(["registry.yaml", "built-in", f"{catalogue} models", "-"])
    if args.json:
        print(json.dumps({"plugins": [dict(zip(["name", "version", "registered", "hooks"], r)) for r in rows],
                          "failures": [str(f) for f in registry.failures]}, indent=2))
    else:
        print(text_table(rows, ["plugin", "version", "registered", "hooks"]))
        for failure in registry.failures:
            print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if registry.failures and args.strict else 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    if not args.target:
        raise ZooError("say what to check: `zoo plugins check PLUGIN` (a distribution name) or a model name")
    results = check(args.target, progress=lambda name: print(f"checking {name} ...", file=sys.stderr))
    print(format_table(results))
    return 1 if any(r.status == "fail" for r in results) or not results else 0


def cmd_pull(args: argparse.Namespace) -> int:
    for name in args.names:
        files = pull(name)
        print(f"{files.spec.name}: {files.root} (from {files.source.describe()}, {len(files.verified)} files verified)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    for name in args.names:
        files = verify(name)
        print(f"{files.spec.name}: OK, {len(files.verified)} files match their sha256 ({files.root})")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from zoo.store._cache import human_size

    packed = pack(args.names, args.output)
    for model in packed:
        print(f"packed {model.name}: {model.files} files, {human_size(model.size)}")
    print(f"wrote {args.output}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    for name, status in unpack(args.bundle):
        print(f"{name}: {status}")
    print(f"into {zoo_home()}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from zoo.store._cache import human_size, list_cache, remove_model, verify_cache

    if args.action == "list":
        items = list_cache()
        rows = [[e.name, e.kind, human_size(e.size), "yes" if e.verified else "no", ", ".join(e.models) or "-"]
                for e in items]
        print(text_table(rows, ["entry", "kind", "size", "verified", "models"]) if rows else "the cache is empty")
        print(f"{len(items)} entries, {human_size(sum(e.size for e in items))} in {zoo_home()}")
        return 0
    if args.action == "verify":
        report = verify_cache()
        for item in report.evicted:
            print(f"CORRUPT, removed: {item}")
        for item in report.kept:
            print(f"CORRUPT, left in place (outside {zoo_home()}): {item}")
        for item in report.refused:
            print(f"REFUSED: {item}")
        print(f"{report.checked} files checked, {report.corrupt} corrupt, {len(report.refused)} entries refused")
        return 1 if report.corrupt or report.refused else 0
    if not args.name:
        raise ZooError("say which model: `zoo cache remove NAME`")
    removed = remove_model(args.name)
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print(f"nothing cached for {args.name}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    check_embedding_output(args.output)  # before the model loads
    model = load(args.name, device=args.device, runtime=args.runtime)
    tower = model.tower(args.tower)[0]
    inputs = open_inputs(args.inputs, modality=tower, column=args.column, files_as_text=args.files_as_text,
                         id_column=args.id_column, keep=_column_list(args.keep_columns))
    options = model.embed_options(tower=tower, pool=args.pool, normalize=args.normalize, prompt=args.prompt,
                                  prompt_text=args.prompt_text, truncate_dim=args.truncate_dim,
                                  precision=args.precision, layers=args.layers, layer_merge=args.layer_merge,
                                  role=args.role or model.search_role("document"))
    calibration = read_embeddings(args.calibration, what="--calibration").rows if args.calibration else None
    summary = embed_to_file(model, inputs, args.output, batch_size=args.batch_size, chunk_size=args.chunk_size,
                            chunk_seconds=args.chunk_seconds, on_error="skip" if args.skip_errors else "raise",
                            num_workers=default_workers(model.device) if args.workers is None else args.workers,
                            progress=not args.quiet, options=options, calibration=calibration)
    if summary.chunks_done_before:
        print(f"resumed: {summary.inputs_done_before} of {summary.rows + len(summary.skipped)} inputs "
              f"({summary.chunks_done_before} of {summary.chunks} chunks) were already done")
    for item, why in summary.skipped[:5]:
        print(f"skipped {item}: {why}", file=sys.stderr)
    if summary.skipped_file:
        print(f"skipped {plural(len(summary.skipped), 'input')}; all are listed with their reasons in "
              f"{summary.skipped_file}",
              file=sys.stderr)
    shape = f"{summary.rows} x {options.width} {options.precision}" if model.kind == "embedder" else \
        f"{plural(summary.rows, 'row')} of {model.row_format.description} of width {options.width}"
    role = f" {embedded_as(options.role)}" if options.role else ""
    print(f"wrote {summary.output}: {shape} from {model.name}{role} "
          f"({inputs.description}{f', {len(summary.skipped)} skipped' if summary.skipped else ''})")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    output = check_predictions_output(args.output)  # before the model loads
    model = load(args.name, device=args.device, runtime=args.runtime)
    inputs = open_inputs(args.inputs, modality=model.tower()[0], column=args.column, files_as_text=args.files_as_text)
    ids, items = zip(*inputs) if len(inputs) else ((), ())
    probs = model.classify(list(items), labels, args.template, scale=args.scale, batch_size=args.batch_size,
                           progress=not args.quiet)
    provenance = {**weights_provenance(model.spec, model.files), "template": args.template or "default",
                  "scale": logit_scale(model, args.scale)}
    write_predictions(output, ids, labels, probs, provenance)
    counts = Counter(labels[i] for i in probs.argmax(1))
    print(f"wrote {output}: {len(ids)} predictions from {model.name} ({inputs.description}): "
          + ", ".join(f"{label} {counts[label]}" for label in labels))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    parquets = list(args.inputs)
    if (Path(args.output) / INDEX_META_FILE).is_file():
        index = open_index(args.output)
    else:
        first = parquets.pop(0)
        index = build_index(first, args.output, kind=args.kind, m=args.m, ef_search=args.ef_search)
        print(f"{first}: {plural(len(index), 'row')}")
        _print_same_content(index)
    for parquet in parquets:
        print(f"{parquet}: {plural(index.add(parquet), 'new row')} (rows whose input the index holds are skipped)")
        _print_same_content(index)
    print(f"{index.path}: {a_kind(index.kind)} index of {plural(len(index), 'row')} from {index.provenance['model']}")
    return 0


def _print_same_content(index: Any) -> None:
    """Rows the last add left out because another id holds the same content: named, not silent."""
    for row_id, held in index.same_content[:5]:
        print(f"  {row_id}: the same content as {held}, which the index holds; not added")
    if len(index.same_content) > 5:
        print(f"  and {len(index.same_content) - 5} more rows whose content the index holds under another id")


def cmd_search(args: argparse.Namespace) -> int:
    index = open_index(args.index)
    model = load(args.model, device=args.device, runtime=args.runtime) if args.model else None
    reranker = load(args.rerank, device=args.device, kind="reranker") if args.rerank else None
    hits = index.search(list(args.queries), k=args.k, model=model, prompt=args.prompt, prompt_text=args.prompt_text,
                        rerank=reranker, candidates=args.candidates, rerank_column=args.rerank_column)
    if args.json:
        print(json.dumps([{"query": q, "hits": [vars(h) for h in row]} for q, row in zip(args.queries, hits)],
                         indent=2))
        return 0
    measure = {"cosine": "cosine", "dot": "dot product"}.get(index.metric, index.metric)
    if reranker is not None:
        measure = f"{reranker.name}'s score, {measure}"
    for query, row in zip(args.queries, hits):
        print(f"{query}  ({measure}, id, embedding file{', kept columns' if index.columns else ''})")
        for rank, hit in enumerate(row, 1):
            retrieved = f"  {hit.retrieval_score:.4f}" if hit.retrieval_score is not None else ""
            print(f"  {rank:>3}. {hit.score:.4f}{retrieved}  {hit.id}  {hit.source}{_fields_text(hit.fields)}")
    return 0


def _fields_text(fields: dict[str, Any]) -> str:
    """A row's kept columns on one line, each value cut to 80 characters."""
    shown = (f"{name}={' '.join(str(value).split())[:80]!r}" for name, value in fields.items() if value is not None)
    return "".join(f"  {text}" for text in shown)


def cmd_dedup(args: argparse.Namespace) -> int:
    groups = find_duplicates(args.embeddings, args.threshold)
    if args.json:
        shown = [{"ids": g.ids, "min_similarity": g.min_similarity, **({"fields": g.fields} if g.fields else {})}
                 for g in groups]
        print(json.dumps(shown, indent=2, default=str))
        return 0
    for number, group in enumerate(groups, 1):
        print(f"group {number} ({len(group.ids)} rows, cosine >= {group.min_similarity:.4f}):")
        for position, item in enumerate(group.ids):
            print(f"  {item}{_fields_text(group.fields[position] if group.fields else {})}")
    extra = sum(len(g.ids) - 1 for g in groups)
    print(f"{plural(len(groups), 'group')} of near-duplicates (cosine >= {args.threshold}, within float rounding); "
          f"{plural(extra, 'row')} could go")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    check_map_output(args.output)  # before any work
    emb = read_embeddings(args.embeddings, what="zoo map")
    if not emb.provenance:
        raise ZooError(f"{args.embeddings} has no provenance: map a .parquet file that `zoo embed` wrote")
    columns = dict(emb.columns)  # what zoo embed --keep-columns kept: shown on hover, --color takes them
    texts, roots = columns.pop("text", None), []
    if args.inputs and Path(args.inputs).is_dir():  # image or audio files: thumbnails from under it only
        roots = [args.inputs]
    elif args.inputs:  # the texts the rows came from, to show on hover
        texts = matching_texts(emb, open_inputs(args.inputs, modality="text", column=args.column), args.inputs)
    colors = None
    if args.color:
        kept = args.color in emb.columns and not args.table
        colors = emb.columns[args.color] if kept else _color_values(args, emb.ids)
    xy, method = project(emb.rows, args.method)
    details = hover_details(emb.ids, texts, roots=roots, columns=columns)
    out = write_map(args.output, xy, emb.ids, details=details, colors=colors,
                    title=describe(method, len(emb.ids), emb.provenance))
    print(f"wrote {out}: {len(emb.ids)} rows, {method.upper()}{f', colored by {args.color}' if colors else ''}")
    return 0


def _color_values(args: argparse.Namespace, ids: list[Any]) -> list[Any]:
    """``--color COLUMN`` per row: from ``--table`` (joined on its ``id`` column, as zoo classify
    writes), else from the ``--inputs`` table (row by row)."""
    table = args.table or args.inputs
    if not table or not is_table(table):
        raise ValueError("--color COLUMN needs a column zoo embed --keep-columns kept, --table FILE (with an id "
                         "column) or --inputs TABLE holding COLUMN")
    if args.table:
        values = {str(row["id"]): row[args.color] for row in iter_rows(args.table, ["id", args.color])}
        return [values.get(str(i), "?") for i in ids]
    values_by_row = [row[args.color] for row in iter_rows(table, [args.color])]
    return [values_by_row[int(i)] if str(i).isdigit() and int(i) < len(values_by_row) else "?" for i in ids]


def cmd_serve(args: argparse.Namespace) -> int:
    serve(args.names, rerankers=args.reranker, host=args.host, port=args.port, max_batch=args.max_batch,
          max_wait_ms=args.max_wait_ms, batch_size=args.batch_size, device=args.device, runtime=args.runtime,
          max_body_mb=args.max_body_mb, max_inputs=args.max_inputs, max_queue=args.max_queue,
          body_timeout=args.body_timeout,
          api_key=args.api_key, max_text_chars=args.max_text_chars, max_audio_seconds=args.max_audio_seconds,
          header_timeout=args.header_timeout, max_header_kb=args.max_header_kb, max_connections=args.max_connections,
          request_timeout=args.request_timeout, media_roots=args.media_root,
          stop_after=args.stop_after, log_level=args.log_level)
    return 0


def _add_serve(register: RegisterCommand) -> None:
    p = register("serve", cmd_serve,
                 help="serve models behind OpenAI-compatible /v1/embeddings and Cohere-compatible /v1/rerank")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to serve (requests name them so)")
    p.add_argument("--reranker", action="append", default=[], metavar="NAME",
                   help="serve NAME as a reranker at /v1/rerank, for a folder whose files do not say its kind (a bare "
                        "sequence classifier); repeat for several")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch", type=int, default=64,
                   help="most items gathered from concurrent requests at once (default 64; 1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5,
                   help="how long a gathering short of a forward pass waits for more requests (default 5)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="items per forward pass: what was gathered is sorted by length and split so (default 32)")
    p.add_argument("--max-body-mb", type=float, default=32, help="larger request bodies get 413 (default 32)")
    p.add_argument("--max-inputs", type=int, default=2048, help="more items in one request get 400 (default 2048)")
    p.add_argument("--max-text-chars", type=int, default=100_000,
                   help="a longer text gets 400 (default 100000; truncation keeps far less of it)")
    p.add_argument("--max-audio-seconds", type=float, default=600, metavar="SECONDS",
                   help="longer audio gets 400, read from its header before decoding (default 600; inf: no bound)")
    p.add_argument("--max-queue", type=int, default=8192,
                   help="most inputs queued or running per model; more get 429 with Retry-After (default 8192)")
    p.add_argument("--body-timeout", type=float, default=30, metavar="SECONDS",
                   help="a client that sends nothing of its body for SECONDS gets 408 (default 30)")
    p.add_argument("--request-timeout", type=float, default=120, metavar="SECONDS",
                   help="a request not answered SECONDS after its body arrived gets 503 with Retry-After and "
                        "leaves the queue (default 120)")
    p.add_argument("--header-timeout", type=float, default=10, metavar="SECONDS",
                   help="a request whose headers are not all in SECONDS after its connection opened or its "
                        "previous answer gets 408 and the connection closes (default 10)")
    p.add_argument("--max-header-kb", type=int, default=64, help="more KiB of request headers get 431 (default 64)")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="most connections and requests at once; a request beyond gets 503 (default 1024)")
    p.add_argument("--media-root", action="append", default=[], metavar="DIR",
                   help="let requests name media files under DIR ({\"video\": \"/abs/path.mp4\"}); repeat for "
                        "several (default: media only as data URLs)")
    p.add_argument("--api-key", help="ask every request but GET /health for 'Authorization: Bearer KEY' "
                                     "(default: $ZOO_API_KEY; unset: no key)")
    _add_device(p)
    p.add_argument("--stop-after", type=float, metavar="SECONDS", help="shut down by itself after SECONDS")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="server log level (default info: one JSON line per request, with its id)")


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        output_dir=args.output, objective=args.objective, strategy=args.strategy, epochs=args.epochs, lr=args.lr,
        backbone_lr=args.backbone_lr, batch_size=args.batch_size, head=args.head, seed=args.seed,
        unfreeze_blocks=args.unfreeze_blocks, freeze_epochs=args.freeze_epochs, val_fraction=args.val_fraction,
        resume=args.resume, progress=not args.quiet, text_column=args.text_column, label_column=args.label_column,
        anchor_column=args.anchor_column, positive_column=args.positive_column, negative_column=args.negative_column,
        scale=args.scale, symmetric=args.symmetric, matryoshka_dims=_dims(args.matryoshka_dims), loss=args.loss,
        lock=tuple(args.lock or ()), mini_batch_size=args.mini_batch_size, **_training_options(args))


def _training_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--schedule cosine --lora-r 16 --lora-targets query,value``: only the flags given, so the
    defaults stay FinetuneConfig's."""
    names = ("schedule", "warmup", "accumulate", "max_grad_norm", "precision", "early_stopping", "layer_decay",
             "class_weights", "lora_r", "lora_alpha", "lora_dropout", "augment", "mixup", "cutmix",
             "group_by_length")
    given = {name: getattr(args, name) for name in names}
    given["tensorboard"] = args.tensorboard or None
    if args.lora_targets:
        given["lora_targets"] = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return {key: value for key, value in given.items() if value is not None}


def _dims(value: str | None) -> tuple[int, ...]:
    """``--matryoshka-dims 384,256,128``."""
    try:
        return tuple(int(d) for d in value.split(",") if d.strip()) if value else ()
    except ValueError:
        raise ValueError(f"--matryoshka-dims takes widths separated by commas (384,256,128), not {value!r}") from None


def _relaunch_under_torchrun(argv: Sequence[str], nproc: int) -> None:
    """Replace this process with ``torchrun`` running the same command, one process per rank."""
    rest, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            rest.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "zoo", *rest]
    os.execvp(cmd[0], cmd)


def cmd_finetune(args: argparse.Namespace) -> int:
    config = _finetune_config(args)  # a bad option fails here, before torchrun or a model load
    if args.nproc and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        _relaunch_under_torchrun(args.argv, args.nproc)

    device = args.device
    if device is None and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    model = load(args.name, device=device)
    result = model.finetune(args.data, args.val, config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    keys = [k for k in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "val_recall@1", "val_recall@10")
            if k in result.history[0]]
    rows = [[str(int(h["epoch"])), *(f"{h[k]:.4f}" for k in keys)] for h in result.history]
    print(text_table(rows, ["epoch", *keys]))
    print(f"best epoch {result.best_epoch}: saved to {result.best_checkpoint} (zoo.load reads it); "
          f"curves in {result.best_checkpoint / 'curves.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="One loader for pretrained models of every modality.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands: dict[str, str] = {}

    def bound(owner: Owner) -> RegisterCommand:
        def register(name: str, run: Callable[[argparse.Namespace], int | None], *,
                     help: str = "") -> argparse.ArgumentParser:  # noqa: A002 (argparse's own word)
            if name in commands:
                raise RegistryError(f"command {name!r} is registered by both {commands[name]} and {owner}")
            commands[name] = str(owner)
            command = sub.add_parser(name, help=help)
            command.set_defaults(func=run)
            return command

        return register

    call_registration_hook(get_plugin_manager(), "zoo_register_commands", bound, builtins_first=True)
    return parser


@hookimpl
def zoo_register_commands(register: RegisterCommand) -> None:
    """zoo's own verbs, registered through the hook a plugin adds one with."""
    for add in (_add_catalogue, _add_embed, _add_finetune, _add_index, _add_dedup, _add_map, _add_classify,
                _add_serve):
        add(register)


def _add_catalogue(register: RegisterCommand) -> None:
    p = register("list", cmd_list, help="list curated models")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. '*minilm*'")
    p.add_argument("--modality", "-m", help="only this modality (text, vision, audio, image-text)")
    p.add_argument("--sort", metavar="METRIC",
                   help=f"only models that publish METRIC, best first ({', '.join(METRICS)})")
    p.add_argument("--json", action="store_true", help="print full specs as JSON")

    p = register("info", cmd_info, help="show what zoo knows about a model")
    p.add_argument("name")

    p = register("plugins", cmd_plugins, help="list plugins, what they registered, and failures; or check one")
    p.add_argument("action", nargs="?", help="'check' runs the conformance kit on TARGET")
    p.add_argument("target", nargs="?", help="a plugin (distribution or entry-point name) or a model name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed")

    p = register("pull", cmd_pull, help="download (or find) and verify model files")
    p.add_argument("names", nargs="+")

    p = register("verify", cmd_verify, help="re-hash a model's files against their pinned sha256")
    p.add_argument("names", nargs="+")

    p = register("pack", cmd_pack, help="write models and everything they need into a bundle for offline machines")
    p.add_argument("names", nargs="+", help="model names, backend:id names or finetuned folders")
    p.add_argument("-o", "--output", required=True, help="bundle file (.tar)")

    p = register("unpack", cmd_unpack, help="verify a bundle and install its models into ZOO_HOME")
    p.add_argument("bundle")

    p = register("cache", cmd_cache, help="list, verify or remove what ZOO_HOME holds")
    p.add_argument("action", choices=["list", "verify", "remove"])
    p.add_argument("name", nargs="?", help="remove: the model whose files to delete")


def _add_embed(register: RegisterCommand) -> None:
    p = register("embed", cmd_embed, help="featurize inputs to an embedding file")
    p.add_argument("name", help="model name, backend:id or path")
    p.add_argument("inputs", help="text file (one item per line), CSV / JSONL / parquet (see --column), "
                                   "or a folder or glob of image, audio or video files")
    p.add_argument("-o", "--output", required=True, help="output .parquet (id + embedding + provenance) or .npy")
    p.add_argument("--column", help="the input column of a CSV / JSONL / parquet file (default: text); for "
                                    "--tower combined, each part's column: text=caption,image=photo")
    p.add_argument("--id-column", help="a table's column of unique row ids (default: the row number)")
    p.add_argument("--keep-columns", metavar="A,B",
                   help="columns of the table kept beside each embedding and shown by search, dedup and map "
                        "(a text file: text, the line itself)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk-seconds", type=float,
                   help="seconds of work per resumable chunk, sized at the run's pace, so a kill loses about "
                        "that much (default: 2 for text, 5 for images and audio; at most 4096 texts, or 512 "
                        "images or clips, a chunk)")
    p.add_argument("--chunk-size", type=int, help="a fixed number of items per resumable chunk instead")
    p.add_argument("--workers", type=int,
                   help="decode processes for images and audio (default: cores - 1, at most 4 on the CPU "
                        "and 16 on a GPU)")
    p.add_argument("--skip-errors", action="store_true",
                   help="leave out unreadable items; they are listed with reasons in OUT.skipped.jsonl")
    p.add_argument("--files-as-text", action="store_true",
                   help="for a text model: embed the content of each file of a folder or glob")
    p.add_argument("--pool", help="pooling mode, where the model has a choice")
    p.add_argument("--tower", metavar="MODALITY",
                   help="embed through this tower of the model (model.towers lists them): video for clips with "
                        "an image model, text for an image-text model's captions (default: its first)")
    _add_embed_options(p)
    _add_device(p)
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None, help="L2-normalise rows")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false", help="do not L2-normalise rows")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _column_list(value: str | None) -> tuple[str, ...]:
    """``--keep-columns a,b``: the names, in order."""
    return tuple(name.strip() for name in value.split(",") if name.strip()) if value else ()


def _add_index(register: RegisterCommand) -> None:
    p = register("index", cmd_index, help="build a vector index over embedding files, or add files to one")
    p.add_argument("inputs", nargs="+", metavar="EMB.parquet", help="embedding files zoo embed wrote")
    p.add_argument("-o", "--output", required=True, metavar="IDX",
                   help="index folder: built if new; an existing index gets the files' new rows")
    p.add_argument("--kind", metavar="TYPE",
                   help="dense rows: flat, exact (default), or hnsw, approximate, for millions of rows; a plugin's "
                        "kind of rows: the types its row format builds (the first is the default)")
    p.add_argument("--m", type=int, help="hnsw: links per node (default 32)")
    p.add_argument("--ef-search", type=int, help="hnsw: candidates per search (default 64)")
    p = register("search", cmd_search, help="nearest rows of an index for texts or image / audio files")
    p.add_argument("index", metavar="IDX")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="a text, or the path of an image or audio file")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model", help="embed queries with this model (it must match the index's provenance)")
    p.add_argument("--rerank", metavar="MODEL", help="rerank the nearest --candidates rows with this reranker "
                                                     "(a cross-encoder) and show the best -k by its score")
    p.add_argument("--candidates", type=int, default=100, help="rows the reranker scores per query (default 100)")
    p.add_argument("--rerank-column", default="text",
                   help="the kept column holding each row's text for the reranker (default: text)")
    _add_prompt(p, "query")
    _add_device(p)


def _add_dedup(register: RegisterCommand) -> None:
    p = register("dedup", cmd_dedup, help="groups of near-duplicate rows in an embedding file")
    p.add_argument("embeddings", metavar="EMB.parquet", help="an embedding file zoo embed wrote")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"cosine similarity at which two rows are near-duplicates (default {DEFAULT_THRESHOLD})")
    p.add_argument("--json", action="store_true")


def _add_map(register: RegisterCommand) -> None:
    p = register("map", cmd_map, help="a 2-D picture of an embedding file: interactive .html or static .png")
    p.add_argument("embeddings", metavar="EMB.parquet", help="an embedding file zoo embed wrote")
    p.add_argument("-o", "--output", required=True, help="map.html (zoom, hover) or map.png")
    p.add_argument("--inputs", help="the text file or table the rows were embedded from: hover shows each text")
    p.add_argument("--column", help="the text column of --inputs, if a table (default: text)")
    p.add_argument("--color", metavar="COLUMN", help="color points by this column of --table or --inputs")
    p.add_argument("--table", help="a table with an id column, e.g. what zoo classify wrote")
    p.add_argument("--method", default="auto", choices=["auto", "umap", "tsne", "pca"],
                   help="projection (default: UMAP if installed, else t-SNE up to 5000 rows, else PCA)")


def _add_classify(register: RegisterCommand) -> None:
    p = register("classify", cmd_classify, help="zero-shot: label inputs with label names alone, no training")
    p.add_argument("name", help="a text or image-text model: name, backend:id or path")
    p.add_argument("inputs", help="as zoo embed takes them: a text file, a CSV / JSONL / parquet column, "
                                   "or a folder or glob of images")
    p.add_argument("--labels", required=True, help="comma-separated label names, e.g. cat,dog,bird")
    p.add_argument("-o", "--output", required=True, help="output .parquet or .csv: id, label, score, p(LABEL)...")
    p.add_argument("--template", help="text around each label, e.g. 'a photo of a {}.' (default: CLIP's 80 "
                                      "ImageNet prompts for image-text models, the bare label for text models)")
    p.add_argument("--scale", type=float, help="multiplies the cosine similarities before the softmax "
                                               "(default: the model's logit scale, or 20 for text models)")
    p.add_argument("--column", help="the input column of a CSV / JSONL / parquet file (default: text)")
    p.add_argument("--files-as-text", action="store_true", help="for a text model: classify each file's content")
    p.add_argument("--batch-size", type=int, default=32)
    _add_device(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _add_device(p: argparse.ArgumentParser) -> None:
    """Where and on what the model runs."""
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--runtime", choices=RUNTIMES,
                   help="what runs the frozen model: torch, or onnx / openvino on the CPU, exported from the "
                        "same weights on first use (default: $ZOO_RUNTIME, else torch)")


def _add_prompt(p: argparse.ArgumentParser, what: str = "text") -> None:
    """A prompt put before texts, by the name the model declares or as the text itself."""
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help=f"a prompt the model declares, put before every {what} (e.g. query)")
    prompt.add_argument("--prompt-text", help=f"a literal text put before every {what} (e.g. 'query: ')")


def _add_embed_options(p: argparse.ArgumentParser) -> None:
    _add_prompt(p)
    p.add_argument("--role", choices=ROLES,
                   help="what the inputs are to a retrieval model: the role's declared prompt, and the role's own "
                        "path in a model that runs them differently (default: document for such a model, a "
                        "ColBERT; none otherwise)")
    p.add_argument("--truncate-dim", type=int, help="keep the first N dimensions (Matryoshka), re-normalised")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="output precision, as sentence-transformers' quantize_embeddings (default float32)")
    p.add_argument("--calibration", metavar="FILE",
                   help="float embeddings (.parquet or .npy) whose ranges bucket int8 / uint8 (default: the output's)")
    p.add_argument("--layer", type=int, action="append", dest="layers",
                   help="pool this hidden layer instead of the output (-2: the one before last); repeat to merge")
    p.add_argument("--layer-merge", default="concat", choices=LAYER_MERGES, help="how repeated --layer combine")


def _add_finetune(register: RegisterCommand) -> None:
    p = register("finetune", cmd_finetune, help="train a classifier, or the embedding itself, and save it")
    p.add_argument("name", help="model name, backend:id or path")
    p.add_argument("data", help="class folder (one subfolder per label) or CSV / JSONL with text and label columns; "
                                "contrastive: a table of anchor, positive (and negative) columns")
    p.add_argument("-o", "--output", required=True, help="output folder (zoo.load reads it back)")
    p.add_argument("--objective", default="classification", choices=OBJECTIVES,
                   help="classification: a head on labelled inputs; contrastive: the embedding itself, on pairs "
                        "with in-batch negatives")
    p.add_argument("--strategy", "-s", default="auto", choices=("auto", *STRATEGIES),
                   help="auto: full for contrastive, else linear-probe")
    p.add_argument("--epochs", "-e", type=int, default=5)
    p.add_argument("--val", help="validation data, in the same form as DATA")
    p.add_argument("--val-fraction", type=float, help="hold out this fraction of DATA per class instead")
    p.add_argument("--lr", type=float, help="head learning rate (default 1e-2 for linear-probe, else 1e-3)")
    p.add_argument("--backbone-lr", type=float, help="backbone learning rate (default lr / 10)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--head", default="linear", choices=HEADS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unfreeze-blocks", type=int, default=2, help="partial: how many last blocks train")
    p.add_argument("--freeze-epochs", type=int, default=1, help="freeze-unfreeze: frozen epochs first")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its last epoch")
    p.add_argument("--nproc", type=int, help="data-parallel processes (runs itself under torchrun)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--anchor-column", default="anchor")
    p.add_argument("--positive-column", default="positive")
    p.add_argument("--negative-column", default="negative", help="used where the table has it")
    p.add_argument("--scale", type=float, default=20.0, help="contrastive: similarity scale (default 20)")
    p.add_argument("--symmetric", action="store_true", help="contrastive: also rank anchors for each positive")
    p.add_argument("--matryoshka-dims", metavar="D,D", help="contrastive: also train these leading widths")
    p.add_argument("--loss", default="auto", choices=CONTRASTIVE_LOSSES,
                   help="contrastive: mnrl (in-batch negatives), or open_clip's clip / siglip for image-caption "
                        "pairs (auto: siglip for a model with a logit bias, clip for image-text, else mnrl)")
    p.add_argument("--lock", action="append", choices=("vision", "text"),
                   help="contrastive: keep this tower of an image-text model frozen (repeatable)")
    _add_training_flags(p.add_argument_group("training settings (every objective and strategy)"))
    p.add_argument("--mini-batch-size", type=int, metavar="N",
                   help="contrastive: embed N rows at a time with cached gradients (GradCache), so --batch-size's "
                        "negatives fit in the memory of N rows")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _add_training_flags(g: argparse._ArgumentGroup) -> None:
    """The flags of zoo.training._optim's settings, LoRA's and augmentation's (FinetuneConfig's
    defaults apply to those not given)."""
    g.add_argument("--schedule", choices=SCHEDULES,
                   help="learning rate after warmup (default linear decay to 0)")
    g.add_argument("--warmup", type=float, help="share of the steps warming up (default 0.1)")
    g.add_argument("--accumulate", type=int, metavar="N", help="batches per optimizer step (default 1)")
    g.add_argument("--max-grad-norm", type=float, help="clip the gradients' global norm to this")
    g.add_argument("--precision", choices=TRAINING_PRECISIONS, help="fp32 (default), bf16, or fp16 (loss-scaled)")
    g.add_argument("--early-stopping", type=int, metavar="EPOCHS",
                   help="stop after this many epochs without a better validation score")
    g.add_argument("--layer-decay", type=float, help="each block's learning rate is this times the one above")
    g.add_argument("--class-weights", choices=("balanced",), help="classification: weigh classes by rarity")
    g.add_argument("--tensorboard", action="store_true", help="log losses and metrics under OUTPUT/tensorboard")
    g.add_argument("--augment", metavar="POLICY",
                   help="vision: timm's train-time transform of the weights' data config: 'weights', or an "
                        "auto_augment policy such as rand-m9-mstd0.5-inc1")
    g.add_argument("--group-by-length", action=argparse.BooleanOptionalAction,
                   help="text classification: batch texts of similar length (default: on for texts)")
    g.add_argument("--mixup", type=float, metavar="ALPHA", help="image classification: timm's mixup (0.8)")
    g.add_argument("--cutmix", type=float, metavar="ALPHA", help="image classification: timm's cutmix (1.0)")
    g.add_argument("--lora-r", type=int, help="lora: the adapters' rank (default 8)")
    g.add_argument("--lora-alpha", type=float, help="lora: their scale is alpha / r (default 16)")
    g.add_argument("--lora-dropout", type=float, help="lora: dropout on the adapters' input (default 0)")
    g.add_argument("--lora-targets", metavar="A,B", help="lora: the layers to adapt (default: every linear layer)")


def plural(count: int, noun: str) -> str:
    """``"1 input"``, ``"2 inputs"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings as one line a person reads (``zoo: warning: ...``), not Python's file:line form."""
    print(f"zoo: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `zoo finetune --nproc N` re-runs the same arguments under torchrun
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader stopped early (`zoo list --json | head -1`): what it read is the answer.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ZooError, OSError, ValueError) as exc:
        hint = ""
        if isinstance(exc, InputError) and getattr(args, "skip_errors", None) is False:
            hint = "; rerun with --skip-errors to leave such inputs out (each is listed with its reason)"
        print(f"zoo: error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
