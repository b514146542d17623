"""A local stand-in for the Hugging Face hub, so the real TransformerLens → transformers → huggingface_hub
code runs end to end without a network.

It serves a folder of saved repositories, one sub-folder per branch::

    <root>/<org>/<name>/<branch>/config.json, model.safetensors, tokenizer.json, ...

with the endpoints huggingface_hub 2.x calls (read from its ``file_download.py``, ``_snapshot_download.py``
and ``hf_api.py``):

- ``GET|HEAD /<org>/<name>/resolve/<revision>/<file>``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` (``get_hf_file_metadata`` needs all three); a missing file is a 404 with
  ``X-Error-Code: EntryNotFound`` and ``X-Repo-Commit`` (cached as "does not exist" by huggingface_hub);
- ``GET /api/models/<org>/<name>[/revision/<revision>]``: ``sha`` and ``siblings`` (``repo_info``);
- ``GET /api/models/<org>/<name>/tree/<revision>[/<path>]``: the file list ``snapshot_download`` reads;
- ``GET /api/models/<org>/<name>/refs``: branches with ``name``, ``ref``, ``targetCommit``
  (``list_repo_refs``).

A revision is a branch name or a commit sha. Each branch's commit is a sha1 over its files' contents,
so rewriting a branch's files gives it a new commit. Requests without ``Authorization`` are served, and
so are requests with ``Bearer <token>`` for the one token it accepts; any other credential gets the
hub's 401. ``fail_status`` makes it answer every request with that status (a hub outage).
Point a process at it with ``HF_ENDPOINT=<url>`` in that process's environment: huggingface_hub reads
it once, at import.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["ACCEPTED_TOKEN", "LocalHub"]

ACCEPTED_TOKEN = "hf_phasescopeLocalHubTestToken"
_LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".model")


class _Branch:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        self.sha256 = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in self.files.items()}
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(f"{name}\0{self.sha256[name]}\n".encode())
        self.commit = digest.hexdigest()

    def git_oid(self, name: str) -> str:
        data = self.files[name].read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """The hub stand-in on ``127.0.0.1:<free port>``; ``url`` is what ``HF_ENDPOINT`` should be.

    Args:
        root: the folder of repositories (``<org>/<name>/<branch>/``); re-read by ``refresh()``.
        token: the one bearer token accepted besides no token at all.
    """

    def __init__(self, root: Path, token: str = ACCEPTED_TOKEN) -> None:
        self.root = Path(root)
        self.token = token
        self.fail_status: int | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self._lock = threading.Lock()
        self._repos: dict[str, dict[str, _Branch]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.refresh()

    # --- the repositories ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the repositories (after a test wrote or changed one)."""
        repos: dict[str, dict[str, _Branch]] = {}
        if self.root.is_dir():
            for org in sorted(p for p in self.root.iterdir() if p.is_dir()):
                for repo in sorted(p for p in org.iterdir() if p.is_dir()):
                    branches = {b.name: _Branch(b) for b in sorted(repo.iterdir()) if b.is_dir()}
                    repos[f"{org.name}/{repo.name}"] = branches
        with self._lock:
            self._repos = repos

    def commit(self, repo_id: str, branch: str) -> str:
        """The commit sha a branch points at."""
        with self._lock:
            return self._repos[repo_id][branch].commit

    def _branch(self, repo_id: str, revision: str) -> _Branch | None:
        branches = self._repos.get(repo_id, {})
        if revision in branches:
            return branches[revision]
        return next((b for b in branches.values() if b.commit == revision), None)

    # --- the server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, method: str | None = None, contains: str = "") -> int:
        """How many requests were served, optionally of one method and with ``contains`` in the path."""
        with self._lock:
            return sum(1 for m, p, _ in self.requests if (method is None or m == method) and contains in p)

    def auth_seen(self) -> Counter[str | None]:
        """The Authorization headers received, counted (None: no header)."""
        with self._lock:
            return Counter(a for _, _, a in self.requests)


class _Handler(BaseHTTPRequestHandler):
    owner: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: tests read hub.requests instead

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    # --- plumbing -------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None, head: bool = False
    ) -> None:
        self._send(
            status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}, head
        )

    def _error(
        self, status: int, code: str | None, message: str, commit: str | None = None, head: bool = False
    ) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._json({"error": message}, status, headers, head)

    def _serve(self, head: bool) -> None:
        hub = self.owner
        path = urlsplit(self.path).path
        auth = self.headers.get("Authorization")
        with hub._lock:
            hub.requests.append((self.command, path, auth))
        if hub.fail_status is not None:
            self._error(hub.fail_status, None, "the hub is down", head=head)
            return
        if auth is not None and auth != f"Bearer {hub.token}":
            self._error(401, None, "Invalid credentials in Authorization header", head=head)
            return
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with hub._lock:
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                self._api(f"{parts[2]}/{parts[3]}", parts[4:], head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
            else:
                self._error(404, None, "no such endpoint", head=head)

    # --- endpoints ------------------------------------------------------------------------------

    def _api(self, repo_id: str, rest: list[str], head: bool) -> None:
        branches = self.owner._repos.get(repo_id)
        if branches is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return
        if rest == ["refs"]:
            refs = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": b.commit} for n, b in branches.items()
            ]
            self._json({"branches": refs, "converts": [], "tags": []}, head=head)
            return
        if rest[:1] == ["tree"] and len(rest) >= 2:
            branch = self.owner._branch(repo_id, rest[1])
            if branch is None:
                self._error(404, "RevisionNotFound", "Invalid rev id", head=head)
                return
            prefix = "/".join(rest[2:]).strip("/")
            names = [n for n in branch.files if not prefix or n.startswith(prefix + "/")]
            if prefix and not names:
                self._error(404, "EntryNotFound", "no such folder", branch.commit, head=head)
                return
            entries = []
            for name in names:
                size = branch.files[name].stat().st_size
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": branch.git_oid(name),
                    "size": size,
                    "path": name,
                }
                if name.endswith(_LFS_SUFFIXES):
                    entry["lfs"] = {"oid": branch.sha256[name], "size": size, "pointerSize": 134}
                entries.append(entry)
            self._json(entries, head=head)
            return
        revision = "main"
        if rest[:1] == ["revision"] and len(rest) >= 2:
            revision = "/".join(rest[1:])
        elif rest:
            self._error(404, None, "no such endpoint", head=head)
            return
        branch = self.owner._branch(repo_id, revision)
        if branch is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return
        info = {
            "_id": repo_id,
            "id": repo_id,
            "modelId": repo_id,
            "sha": branch.commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": n} for n in branch.files],
        }
        self._json(info, head=head)

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool) -> None:
        if repo_id not in self.owner._repos:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return
        branch = self.owner._branch(repo_id, revision)
        if branch is None:
            self._error(404, "RevisionNotFound", "Invalid rev id", head=head)
            return
        if name not in branch.files:
            self._error(404, "EntryNotFound", "Entry not found", branch.commit, head=head)
            return
        data = branch.files[name].read_bytes()
        lfs = name.endswith(_LFS_SUFFIXES)
        etag = branch.sha256[name] if lfs else branch.git_oid(name)
        headers = {
            "X-Repo-Commit": branch.commit,
            "ETag": f'"{etag}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        self._send(200, data, headers, head)
