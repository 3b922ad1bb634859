"""What an OpenAI-style ``POST /v1/embeddings`` body asks for, checked item by item.

Texts are strings; images and audio come as data URLs (``data:image/jpeg;base64,...``,
``data:audio/wav;base64,...``), as OpenAI's own multimodal endpoints take them. Every refusal is
a :class:`RequestError` naming the field or the input index, answered as a 4xx JSON body. A data
URL goes to the modality that registered its MIME type (``media_types``), so a modality a plugin
adds is served with no change here.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from zoo.catalog._registry import get_registry
from zoo.core._media import MediaBytes
from zoo.errors import did_you_mean
from zoo.plugins.combined import COMBINED, PARTS
from zoo.plugins.text import decode_text

# A data URL's header; one whose MIME type no modality registered is refused, not read as text.
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)

# The fields of OpenAI's embeddings request ("user" is accepted and unused, as OpenAI documents it),
# and Voyage's input_type ("query" / "document": sentence-transformers' encode_query / encode_document).
FIELDS = ("model", "input", "encoding_format", "dimensions", "user", "input_type")
INPUT_TYPES = ("query", "document")
#: the keys of an object input that holds one medium, each the MIME family of its data URLs
MEDIA_KEYS = ("image", "video", "audio")


class RequestError(Exception):
    """A request zoo refuses: HTTP ``status``, a message, and the field (``param``) it names."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape, which its clients read."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class EmbeddingRequest:
    model: str
    items: list[tuple[str, Any]]  # (modality, payload): ("text", str) or ("vision", bytes)...
    encoding_format: str
    dimensions: int | None
    media: list[str]  # each item's type as sent: "text" or a data URL's MIME type ("image/png")
    role: str | None = None  # input_type: "query" or "document"


@dataclass(frozen=True)
class ItemRules:
    """How the server reads an input: ``modality_of_media`` names the modality of a MIME type (the
    registry's); a text longer than ``max_text_chars`` is refused; a media input may name a file
    under one of ``media_roots`` (``zoo serve --media-root``), and no other."""

    modality_of_media: Callable[[str], str | None] = lambda media: None
    max_text_chars: int = 100_000
    media_roots: tuple[Path, ...] = ()


def parse_request(body: bytes, max_inputs: int = 2048, rules: ItemRules = ItemRules()) -> EmbeddingRequest:
    """The request's fields, or a 400 naming the one that is wrong. More than ``max_inputs``
    items, or a text longer than ``rules.max_text_chars``, is refused (OpenAI's own limit is 2048
    inputs), so one request cannot hold a model for minutes."""
    data, model = _json_request(body, FIELDS, "input")
    raw = data.get("input")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'input' must be a non-empty string or list of strings", "input")
    if len(raw) > max_inputs:
        raise RequestError(400, f"'input' has {len(raw)} items; this server takes at most {max_inputs} per request "
                           "(zoo serve --max-inputs): send them in several requests", "input")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise RequestError(400, f"encoding_format must be 'float' or 'base64', not {encoding!r}", "encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise RequestError(400, f"dimensions must be a positive integer, not {dimensions!r}", "dimensions")
    role = data.get("input_type")
    if role is not None and role not in INPUT_TYPES:
        raise RequestError(400, f"input_type must be 'query' or 'document', not {role!r}", "input_type")
    items = [_item(i, x, rules) for i, x in enumerate(raw)]
    return EmbeddingRequest(model, [(kind, payload) for kind, payload, _ in items], encoding, dimensions,
                            [media for _, _, media in items], role)


def _json_request(body: bytes, fields: tuple[str, ...], items: str) -> tuple[dict[str, Any], str]:
    """The body as a JSON object of known ``fields`` only, and its ``model``; ``items`` names the
    field of its inputs, for the messages."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, f"the body's JSON is nested too deeply; send '{items}' as a flat list") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the body must be a JSON object with 'model' and '{items}'")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}{did_you_mean(unknown[0], fields)}; the request "
                           f"takes {', '.join(fields)}", unknown[0])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required: the name of a served model (GET /v1/models)", "model")
    return data, model


# The fields of Cohere's rerank request, which Jina's, infinity's and TEI's OpenAI-style routes share.
RERANK_FIELDS = ("model", "query", "documents", "top_n", "return_documents")


@dataclass
class RerankRequest:
    model: str
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool


def parse_rerank(body: bytes, max_inputs: int = 2048, max_text_chars: int = 100_000) -> RerankRequest:
    """A ``POST /v1/rerank`` body as Cohere's and Jina's clients send it (documents as strings or
    ``{"text": ...}`` objects), or a 400 naming the field or document that is wrong."""
    data, model = _json_request(body, RERANK_FIELDS, "documents")
    query = data.get("query")
    if not isinstance(query, str) or not query:
        raise RequestError(400, "'query' is required: the text to rank the documents against", "query")
    try:
        decode_text(query)  # here, not per pair: a bad query would fail every document
    except ValueError as exc:
        raise RequestError(400, f"query: {exc}", "query") from None
    if len(query) > max_text_chars:
        raise RequestError(400, f"the query is a text of {len(query)} characters; this server takes at most "
                           f"{max_text_chars} (zoo serve --max-text-chars)", "query", "too_long")
    raw = data.get("documents")
    if not isinstance(raw, list) or not raw:
        raise RequestError(400, "'documents' must be a non-empty list of texts (or {\"text\": ...} objects)",
                           "documents")
    if len(raw) > max_inputs:
        raise RequestError(400, f"'documents' has {len(raw)} items; this server takes at most {max_inputs} per "
                           "request (zoo serve --max-inputs): rank the best candidates only", "documents")
    documents = [_document(i, d, max_text_chars) for i, d in enumerate(raw)]
    top_n = data.get("top_n")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise RequestError(400, f"top_n must be a positive integer, not {top_n!r}", "top_n")
    flag = data.get("return_documents", False)
    if not isinstance(flag, bool):
        raise RequestError(400, f"return_documents must be true or false, not {flag!r}", "return_documents")
    return RerankRequest(model, query, documents, top_n, flag)


def _document(index: int, value: Any, max_text_chars: int) -> str:
    text = value.get("text") if isinstance(value, dict) and set(value) == {"text"} else value
    if not isinstance(text, str):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        raise RequestError(400, f"documents[{index}] is {'a number' if number else _json_kind(value)}; send a text, "
                           "or {\"text\": ...}", f"documents[{index}]")
    if len(text) > max_text_chars:
        raise RequestError(400, f"documents[{index}] is a text of {len(text)} characters; this server takes at most "
                           f"{max_text_chars} (zoo serve --max-text-chars)", f"documents[{index}]", "too_long")
    return text


def _item(index: int, value: Any, rules: ItemRules) -> tuple[str, Any, str]:
    if isinstance(value, dict):
        return _object_item(index, value, rules)
    if not isinstance(value, str):
        raise RequestError(400, f"input[{index}] is {_json_kind(value)}; send text, or an image or audio as a data "
                           "URL", f"input[{index}]")
    url = _DATA_URL.match(value)
    if url is None:  # text, even text that starts with "data:"
        return _text(index, value, rules)
    kind = rules.modality_of_media(url.group(1))
    if kind is None:  # not read as text either: its base64 would be embedded as words
        raise RequestError(400, f"input[{index}] is a data URL of type {url.group(1)}, which no modality of this "
                           "server takes; send an image or audio data URL, or a text as itself", f"input[{index}]")
    try:
        # the declared type travels with the bytes: the modality's decoder holds them to it
        media = url.group(1).lower()
        return kind, MediaBytes(base64.b64decode(value[url.end():], validate=True), media), media
    except (binascii.Error, ValueError):
        raise RequestError(400, f"input[{index}]: the base64 payload of its data URL does not decode",
                           f"input[{index}]") from None


def _text(index: int, value: str, rules: ItemRules) -> tuple[str, Any, str]:
    if len(value) > rules.max_text_chars:  # tokenising it would hold the model; truncation keeps far less
        raise RequestError(400, f"input[{index}] is a text of {len(value)} characters; this server takes at most "
                           f"{rules.max_text_chars} (zoo serve --max-text-chars): cut it, or send it as several "
                           "inputs", f"input[{index}]", "too_long")
    return "text", value, "text"


def _object_item(index: int, value: dict[str, Any], rules: ItemRules) -> tuple[str, Any, str]:
    """An input given as an object, as Jina's multimodal embeddings take them: ``{"text": ...}``,
    ``{"image": ...}``, ``{"video": ...}`` or ``{"audio": ...}`` is that input alone (the media a
    data URL, or a file under one of the server's media roots); ``{"text": ..., "image": ...}`` a
    combined one, for the model's combined tower, its image a data URL."""
    keys = set(value)
    if not (keys == set(PARTS) or (len(keys) == 1 and keys <= {"text", *MEDIA_KEYS})) or \
            not all(isinstance(v, str) for v in value.values()):
        raise RequestError(400, f"input[{index}] is an object; it holds one of text, {', '.join(MEDIA_KEYS)}, or "
                           f"{' and '.join(PARTS)} together, each a string (media as a data URL)", f"input[{index}]")
    parts = {part: _media_part(index, part, v, rules, alone=len(keys) == 1) for part, v in value.items()}
    if len(parts) == 1:
        return next(iter(parts.values()))
    return COMBINED, {part: payload for part, (_, payload, _) in parts.items()}, COMBINED


def _media_part(index: int, part: str, value: str, rules: ItemRules, *, alone: bool) -> tuple[str, Any, str]:
    """One part of an object input: a text, taken as it is (even one that looks like a data URL);
    media as a data URL of its family (``image/...`` for ``image``), or, alone, the path of a file
    under a media root."""
    if part == "text":
        return _text(index, value, rules)
    if _DATA_URL.match(value):
        found = _item(index, value, rules)
        if not found[2].startswith(f"{part}/"):
            raise RequestError(400, f"input[{index}].{part} is a data URL of type {found[2]}, not {part}/...",
                               f"input[{index}]")
        return found
    if not alone or not rules.media_roots:
        where = "this server reads no files (zoo serve --media-root DIR lets it read those under DIR)" \
            if alone else "a combined input's image is always a data URL"
        raise RequestError(400, f"input[{index}].{part} must be a data URL (data:{part}/...;base64,...); {where}",
                           f"input[{index}]")
    return _server_file(index, part, value, rules)


def _server_file(index: int, part: str, value: str, rules: ItemRules) -> tuple[str, Any, str]:
    """A media file the server reads itself: an absolute path or ``file://`` URL whose real path
    (links resolved, so none leads out) is inside one of the media roots, a file with a suffix of
    the modality of its family. The roots are trusted: the file is opened later by this path, so
    no one else may write to them."""
    try:
        found = _file_problem(part, value, rules)
    except (OSError, ValueError) as exc:  # a name the system refuses (too long...)
        found = f"cannot be read: {exc.strerror if isinstance(exc, OSError) else exc}"
    if isinstance(found, str):
        raise RequestError(400, f"input[{index}].{part} {found}: {value[:200]!r}", f"input[{index}]")
    return found


def _file_problem(part: str, value: str, rules: ItemRules) -> tuple[str, Any, str] | str:
    """The input a media path names, or what is wrong with it."""
    path = _local_path(value)
    if path is None or not path.is_absolute():
        return "is not an absolute path or a file:// URL of this host"
    real = Path(os.path.realpath(path))
    suffix = real.suffix.lower()
    kind = rules.modality_of_media(f"{part}/{suffix.lstrip('.')}") if suffix else None
    if not any(real.is_relative_to(root) for root in rules.media_roots):
        return "is outside the folders this server reads (zoo serve --media-root)"
    if not real.is_file():
        return "names no file"
    if kind is None or suffix not in get_registry().modality(kind).suffixes:
        return f"has a suffix this server does not read as {part}"
    return kind, str(real), f"{part}/{suffix.lstrip('.')}"


def _local_path(value: str) -> Path | None:
    """The local path a string names (a path, or a ``file://`` URL of this host, percent-decoded),
    or None for a URL of another scheme or host, or a string no path can hold (a NUL byte)."""
    if "\0" in value:
        return None
    parts = urlsplit(value)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            return None
        return Path(url2pathname(parts.path))
    return None if parts.scheme else Path(value)


def _json_kind(value: Any) -> str:
    """What a JSON value that is not a string is, in the client's words (not Python's ``NoneType``)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, list)):  # OpenAI's endpoint takes token ids; zoo's models tokenise themselves
        return "token ids"
    return {float: "a number", dict: "an object"}.get(type(value), "null")


def check_modality(request: EmbeddingRequest, name: str, towers: Collection[str]) -> None:
    """Every item is of a modality one of the model's ``towers`` takes, or a 400 naming the first
    that is not."""
    for index, (kind, _) in enumerate(request.items):
        if kind not in towers:
            what = request.media[index].split("/")[0]
            what = "combined input (a JSON object)" if what == COMBINED else what
            raise RequestError(400, f"input[{index}] is {'an' if what[0] in 'aeiou' else 'a'} {what}; {name} "
                               f"embeds {' or '.join(towers)} inputs", f"input[{index}]")
