"""A small Hugging Face Hub look-alike on loopback, serving local folders.

It speaks the part of the Hub's HTTP protocol that ``huggingface_hub.snapshot_download`` uses (repo
tree listing, ``resolve`` with HEAD and GET, the ``X-Repo-Commit`` / ``ETag`` headers), so zoo's
real hub code runs end to end in tests without the internet. It can also serve plain URLs, slow
down transfers, hold a file back until a test's condition holds (``hold``) and serve corrupted content.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    repos: dict[str, tuple[str, Path]] = field(default_factory=dict)  # repo id -> (commit, folder)
    corrupt: set[str] = field(default_factory=set)  # "repo/file" whose bytes are flipped when served
    delay: float = 0.0  # seconds to sleep per 64 KiB chunk
    hold: Callable[[str], None] | None = None  # called with "repo/file" before a file's GET is answered
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, folder: Path, commit: str | None = None) -> str:
        commit = commit or hashlib.sha1(repo_id.encode() + str(folder).encode()).hexdigest()
        self.repos[repo_id] = (commit, folder)
        return commit

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # -- protocol -------------------------------------------------------------------------------

    def _find_repo(self, parts: list[str]) -> tuple[str, list[str]] | None:
        for n in (2, 1):
            repo_id = "/".join(parts[:n])
            if repo_id in self.repos:
                return repo_id, parts[n:]
        return None

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append(f"{'HEAD' if head else 'GET'} {path}")
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "models"]:
            found = self._find_repo(parts[2:])
            if found is None:
                return self._send(h, 404, b'{"error": "Repository not found"}', head=head,
                                  extra={"X-Error-Code": "RepoNotFound"})
            repo_id, rest = found
            commit, folder = self.repos[repo_id]
            if rest and rest[0] == "tree":
                return self._send_json(h, self._tree(folder), head=head)
            if rest and rest[0] == "revision":
                siblings = [{"rfilename": e["path"]} for e in self._tree(folder) if e["type"] == "file"]
                return self._send_json(h, {"id": repo_id, "sha": commit, "siblings": siblings}, head=head)
            return self._send(h, 404, b"{}", head=head)
        if parts[:1] == ["files"]:  # plain URL downloads: /files/<repo>/<file>
            found = self._find_repo(parts[1:])
            if found is None:
                return self._send(h, 404, b"not found", head=head)
            repo_id, rest = found
            return self._send_file(h, repo_id, "/".join(rest), head=head, hub_headers=False)
        if "resolve" in parts:
            i = parts.index("resolve")
            repo_id = "/".join(parts[:i])
            if repo_id not in self.repos:
                return self._send(h, 404, b"", head=head, extra={"X-Error-Code": "RepoNotFound"})
            filename = "/".join(parts[i + 2:])
            return self._send_file(h, repo_id, filename, head=head, hub_headers=True)
        return self._send(h, 404, b"", head=head)

    def _tree(self, folder: Path) -> list[dict]:
        entries = []
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_dir():
                entries.append({"type": "directory", "path": rel, "oid": git_blob_sha1(rel.encode())})
                continue
            data = p.read_bytes()
            entry = {"type": "file", "path": rel, "size": len(data), "oid": git_blob_sha1(data)}
            if len(data) > 1024:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries

    def _send_file(self, h: BaseHTTPRequestHandler, repo_id: str, filename: str, *, head: bool,
                   hub_headers: bool) -> None:
        commit, folder = self.repos[repo_id]
        file = folder / filename
        if not file.is_file():
            return self._send(h, 404, b"", head=head, extra={"X-Error-Code": "EntryNotFound"})
        if self.hold is not None and not head:
            self.hold(f"{repo_id}/{filename}")
        data = file.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if len(data) > 1024 else git_blob_sha1(data)
        if f"{repo_id}/{filename}" in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        extra = {"X-Repo-Commit": commit, "ETag": f'"{etag}"'} if hub_headers else {}
        self._send(h, 200, data, head=head, extra=extra, content_type="application/octet-stream")

    def _send_json(self, h: BaseHTTPRequestHandler, obj: object, *, head: bool) -> None:
        self._send(h, 200, json.dumps(obj).encode(), head=head, content_type="application/json")

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: bytes, *, head: bool,
              extra: dict[str, str] | None = None, content_type: str = "application/json") -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if head:
            return
        for start in range(0, len(body), 1 << 16):
            if self.delay:
                time.sleep(self.delay)
            h.wfile.write(body[start:start + (1 << 16)])
