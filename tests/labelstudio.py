"""A real Label Studio server for tests, and a small REST client for it (standard library only).

Label Studio lives in its own virtual environment, ``.venv-labelstudio`` (built once by ``make labelstudio``,
a prerequisite of ``make test``), so that its pins never touch influal's. A test starts one server per module,
on 127.0.0.1 with a free port, its own data folder, local files serving rooted at the test's data folder, and a
known user and legacy API token. A start takes 3-10 s: the server copies a migrated template database, built
once per installed version (about 40 s, the first time any test starts a server):

    ok, reason = labelstudio_available()
    if not ok:
        pytest.skip(reason)
    with start_server(data_root, tmp_path) as ls:
        pid = ls.create_project("demo", label_config)
        ls.connect_local_files(pid, "img")   # needed before /data/local-files/?d=img/... URLs resolve
        ls.import_tasks(pid, [{"data": {"image": local_file_url("img/0.png")}}])
        ...
        exported = ls.export(pid)            # Label Studio's own JSON export, as the UI downloads it
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-labelstudio"
EXECUTABLE = VENV / "bin" / "label-studio"
INSTALLED = VENV / ".installed"
FAILED = VENV / ".failed"

USERNAME = "influal@example.com"
PASSWORD = "influal-test-password"
START_TIMEOUT_S = 180.0
DB_NAME = "label_studio.sqlite3"


def labelstudio_available() -> tuple[bool, str]:
    """Whether ``.venv-labelstudio`` holds a finished install; if not, why (for ``pytest.skip``)."""
    if INSTALLED.exists() and EXECUTABLE.exists():
        return True, f"label-studio {INSTALLED.read_text().strip()}"
    if FAILED.exists():
        detail = FAILED.read_text(errors="replace").strip() or "(pip printed nothing)"
        return False, f"label-studio could not be installed into {VENV.name} (make labelstudio):\n{detail}"
    return False, f"label-studio not installed: run make labelstudio (it builds {VENV.name})"


def local_file_url(relative: str | os.PathLike[str]) -> str:
    """The URL a task's data holds for a file under the document root: ``/data/local-files/?d=rel/path.png``."""
    return "/data/local-files/?d=" + urllib.parse.quote(Path(relative).as_posix())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioError(RuntimeError):
    pass


class LabelStudio:
    """A running server (see ``start_server``) and its REST API, authenticated with a legacy API token."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str, data_root: Path, log: Path):
        self.process = process
        self.url = url
        self.token = token
        self.data_root = data_root
        self.log = log

    # ---- life cycle -------------------------------------------------------------------------------------
    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = 15.0) -> None:
        """Stop the server: terminate, then kill if it does not exit within ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- HTTP ---------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                raw: bool = False, timeout: float = 60.0) -> Any:
        """One API call; JSON in and out (``raw=True``: the response's bytes). Raises LabelStudioError on >= 400."""
        url = self.url + path
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Token {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:2000]
            raise LabelStudioError(f"{method} {path} -> HTTP {e.code}: {detail}") from None
        if raw:
            return payload
        return json.loads(payload) if payload.strip() else None

    # ---- API ----------------------------------------------------------------------------------------------
    def create_project(self, title: str, label_config: str) -> int:
        return int(self.request("POST", "/api/projects/", {"title": title, "label_config": label_config})["id"])

    def connect_local_files(self, project_id: int, folder: str | os.PathLike[str]) -> int:
        """A local-files storage for the project over ``folder`` (relative to the document root, or absolute).

        Label Studio serves ``/data/local-files/?d=...`` only for files under the path of some local-files
        storage of a project the user may see, so tasks imported directly (not synced from a storage) need
        one too; nothing is synced, the storage only authorises the URLs. The folder must exist and be a
        strict subfolder of the document root (Label Studio refuses the root itself), so files lying directly
        in the document root can never be served. Returns the storage's id.
        """
        path = (self.data_root / folder).resolve()
        body = {"project": project_id, "path": str(path), "title": path.name, "use_blob_urls": True}
        return int(self.request("POST", "/api/storages/localfiles/", body)["id"])

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Import the JSON list a tasks.json holds (``[{"data": {...}, "predictions": [...]}, ...]``)."""
        return self.request("POST", f"/api/projects/{project_id}/import", tasks,
                            params={"commit_to_project": "true", "return_task_ids": "true"})

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of the project, in id order (the paged /api/tasks list, followed to its end)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            try:
                got = self.request("GET", "/api/tasks/", params={"project": project_id, "page": page,
                                                                 "page_size": 100, "fields": "all"})
            except LabelStudioError as e:
                if "HTTP 404" in str(e) and page > 1:  # past the last page
                    break
                raise
            batch = got["tasks"] if isinstance(got, dict) else got
            out += batch
            total = got.get("total") if isinstance(got, dict) else None
            if not batch or total is None or len(out) >= total:
                break
            page += 1
        return sorted(out, key=lambda t: t["id"])

    def annotate(self, task_id: int, result: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """Create an annotation as an annotator would (POST /api/tasks/{id}/annotations/)."""
        return self.request("POST", f"/api/tasks/{task_id}/annotations/", {"result": result, **extra})

    def skip(self, task_id: int) -> dict[str, Any]:
        """Skip the task as an annotator would: an annotation with ``was_cancelled: true`` and an empty result."""
        return self.annotate(task_id, [], was_cancelled=True)

    def export(self, project_id: int, all_tasks: bool = False) -> list[dict[str, Any]]:
        """Label Studio's own JSON export (GET /api/projects/{id}/export?exportType=JSON).

        ``all_tasks=False`` is what the UI's Export button downloads: only tasks with at least one annotation
        (skipped ones included); ``all_tasks=True`` adds ``download_all_tasks=true``, so unlabelled tasks too.
        """
        params = {"exportType": "JSON"}
        if all_tasks:
            params["download_all_tasks"] = "true"
        return json.loads(self.request("GET", f"/api/projects/{project_id}/export", params=params, raw=True))

    def fetch(self, url: str) -> bytes:
        """GET a URL as a task's data holds it (``/data/local-files/?d=...``), authenticated with the token."""
        return self.request("GET", url, raw=True)


def _environment(base: Path, data_root: Path) -> dict[str, str]:
    """The server's environment. Label Studio reads NAME, LABEL_STUDIO_NAME and HEARTEX_NAME for a setting, so
    inherited ones (HOST, PORT, USERNAME, DATABASE_NAME...) that could redirect it are dropped."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "DJANGO_"))
           and k not in {"HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DATABASE_NAME", "DEBUG",
                         "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(base),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(data_root),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _template_database(data_root: Path) -> Path | None:
    """A freshly migrated, empty SQLite database, built once per installed version and copied into each server.

    Migrating a new database is most of a cold start (about 60 of 70 s on two cores); a server started on a
    migrated one answers /health in about 10 s. Built with ``label-studio version``, which migrates and exits.
    None if it cannot be built: then the server migrates its own database.
    """
    target = VENV / f"template-{INSTALLED.read_text().strip() or 'unknown'}" / DB_NAME
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".template-", dir=VENV))
    try:
        with open(tmp / "build.log", "wb") as out:
            subprocess.run([str(EXECUTABLE), "version"], cwd=tmp, env=_environment(tmp, data_root), stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=600, check=True)
        if not (tmp / DB_NAME).exists():
            return None
        try:
            os.replace(tmp, target.parent)  # atomic; fails harmlessly when a concurrent build won the race
        except OSError:
            pass
        return target if target.exists() else None
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_server(data_root: Path, work: Path, *, timeout: float = START_TIMEOUT_S) -> LabelStudio:
    """Start Label Studio on 127.0.0.1 and wait for /health; usable as a context manager.

    ``data_root`` becomes the local files document root (task URLs ``/data/local-files/?d=<path relative to it>``;
    serving them needs ``connect_local_files`` over a subfolder). ``work`` receives the server's data folder
    (``labelstudio-data``: SQLite database, media, export files) and its log, ``labelstudio.log``. The user is
    ``USERNAME`` / ``PASSWORD``; the client authenticates with a random legacy API token (``.token``).
    """
    ok, reason = labelstudio_available()
    if not ok:
        raise LabelStudioError(reason)
    data_root = Path(data_root).resolve()
    work = Path(work).resolve()
    base = work / "labelstudio-data"
    base.mkdir(parents=True, exist_ok=True)
    if not (base / DB_NAME).exists():
        template = _template_database(data_root)
        if template is not None:
            shutil.copyfile(template, base / DB_NAME)
    port = _free_port()
    token = secrets.token_hex(20)
    cmd = [str(EXECUTABLE), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--username", USERNAME, "--password", PASSWORD, "--user-token", token, "--enable-legacy-api-token"]
    log = work / "labelstudio.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, cwd=work, env=_environment(base, data_root), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = LabelStudio(process, f"http://127.0.0.1:{port}", token, data_root, log)
    try:
        _wait_healthy(server, timeout)
        # The token must work: legacy API tokens are off by default since Label Studio 1.18.
        server.request("GET", "/api/current-user/whoami")
    except BaseException:
        server.close()
        raise
    return server


def _wait_healthy(server: LabelStudio, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise LabelStudioError(f"label-studio exited with code {code} before answering /health; "
                                   f"log tail ({server.log}):\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LabelStudioError(f"label-studio did not answer /health within {timeout:.0f} s; "
                                   f"log tail ({server.log}):\n{server.log_tail()}")
        time.sleep(1.0)
