"""`hope-prepare-data` and the console scripts: atomic copies with size + sha256, clear failures, entry points.

No test touches the network: failures use an unreachable loopback port, and the HTTP path is exercised against a
throwaway server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import re
import threading
from importlib import metadata
from pathlib import Path

import pytest

from hope.cli.prepare_data import main
from hope.data.corpus import DataError
from hope.data.download import fetch

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9/tiny.txt"  # the discard port: connection refused at once
# Every console command of the manual.
MANUAL_SCRIPTS = [
    "hope-prepare-data", "hope-train", "hope-eval", "hope-run-experiment", "hope-eval-long", "hope-track-long",
    "hope-infer", "hope-meta-train", "hope-continual", "hope-eval-binned", "hope-plot-reports",
]
CONTENT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50).encode() + b"\xff\x00 binary tail"


def _source(tmp_path: Path, content: bytes = CONTENT) -> Path:
    src = tmp_path / "src" / "input.txt"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(content)
    return src


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def _check_report(stdout: str, out: Path, content: bytes) -> None:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    report = json.loads(lines[0])
    assert report == {"path": str(out), "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}


# ----------------------------------------------------------------------------- successful copies


@pytest.mark.parametrize("as_url", [False, True], ids=["local-path", "file-url"])
def test_copy_prints_size_and_sha256(tmp_path, capsys, as_url):
    src = _source(tmp_path)
    out = tmp_path / "data" / "nested" / "tiny.txt"  # parent folders are created
    url = src.as_uri() if as_url else str(src)
    assert main(["--out", str(out), "--url", url]) == 0
    captured = capsys.readouterr()
    _check_report(captured.out, out, CONTENT)
    assert captured.err == ""
    assert out.read_bytes() == CONTENT
    assert _leftovers(out.parent, {"tiny.txt"}) == []  # no temp file left behind
    assert out.stat().st_mode & 0o777 == 0o644


def test_copy_replaces_an_existing_destination(tmp_path, capsys):
    src = _source(tmp_path)
    out = tmp_path / "tiny.txt"
    out.write_bytes(b"old")
    assert main(["--out", str(out), "--url", str(src)]) == 0
    assert out.read_bytes() == CONTENT
    _check_report(capsys.readouterr().out, out, CONTENT)


def test_fetch_returns_path_size_and_digest(tmp_path):
    src = _source(tmp_path, b"abc")
    path, size, sha = fetch(str(src), tmp_path / "o.txt")
    assert (path, size, sha) == (tmp_path / "o.txt", 3, hashlib.sha256(b"abc").hexdigest())


# ----------------------------------------------------------------------------- failures: atomic, one line, exit 2


def _assert_failed(capsys, rc: int, fragments: list[str]) -> str:
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def test_network_failure_tells_how_to_pass_a_local_file(tmp_path, capsys):
    out = tmp_path / "tiny.txt"
    rc = main(["--out", str(out), "--url", UNREACHABLE, "--timeout", "5"])
    _assert_failed(capsys, rc, ["cannot download", UNREACHABLE, "--url /path/to/file"])
    assert not out.exists()
    assert _leftovers(tmp_path, set()) == []


def test_failed_download_leaves_the_existing_destination_untouched(tmp_path, capsys):
    out = tmp_path / "tiny.txt"
    out.write_bytes(b"the previous good copy")
    rc = main(["--out", str(out), "--url", UNREACHABLE, "--timeout", "5"])
    _assert_failed(capsys, rc, ["cannot download"])
    assert out.read_bytes() == b"the previous good copy"
    assert _leftovers(tmp_path, {"tiny.txt"}) == []


@pytest.mark.parametrize("case, fragments", [
    ("missing", ["local source not found"]),
    ("empty", ["is empty", "nothing written"]),
    ("scheme", ["unsupported URL scheme 'ftp'"]),
])
def test_bad_sources_fail_cleanly(tmp_path, capsys, case, fragments):
    out = tmp_path / "out" / "tiny.txt"
    out.parent.mkdir()
    out.write_bytes(b"keep me")
    if case == "missing":
        url = str(tmp_path / "does-not-exist.txt")
    elif case == "empty":
        url = _source(tmp_path, b"").as_uri()
    else:
        url = "ftp://example.invalid/x.txt"
    _assert_failed(capsys, main(["--out", str(out), "--url", url]), fragments)
    assert out.read_bytes() == b"keep me"
    assert _leftovers(out.parent, {"tiny.txt"}) == []


# ----------------------------------------------------------------------------- the HTTP path, on loopback


class _Handler(http.server.BaseHTTPRequestHandler):
    body = CONTENT
    declared = len(CONTENT)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(self.declared))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(body: bytes, declared: int) -> str:
        handler = type("Handler", (_Handler,), {"body": body, "declared": declared})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/input.txt"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_download_reports_size_and_sha256(tmp_path, capsys, http_server):
    url = http_server(CONTENT, len(CONTENT))
    out = tmp_path / "tiny.txt"
    assert main(["--out", str(out), "--url", url, "--timeout", "10"]) == 0
    _check_report(capsys.readouterr().out, out, CONTENT)
    assert out.read_bytes() == CONTENT


def test_truncated_download_is_an_error_and_writes_nothing(tmp_path, capsys, http_server):
    # The server promises more bytes than it sends, then closes the connection (a dropped download).
    url = http_server(CONTENT[:100], len(CONTENT))
    out = tmp_path / "tiny.txt"
    out.write_bytes(b"old")
    rc = main(["--out", str(out), "--url", url, "--timeout", "10"])
    _assert_failed(capsys, rc, ["cut short", f"100 of {len(CONTENT)} bytes", "--url /path/to/file"])
    assert out.read_bytes() == b"old"
    assert _leftovers(tmp_path, {"tiny.txt"}) == []
    with pytest.raises(DataError):
        fetch(url, tmp_path / "other.txt", timeout=10)
    assert not (tmp_path / "other.txt").exists()


# ----------------------------------------------------------------------------- console scripts


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory):
    """Every installed console script with --help, and one real hope-prepare-data copy, started together:
    each is a fresh interpreter that may import torch, so running them in parallel keeps the suite fast."""
    tmp = tmp_path_factory.mktemp("scripts")
    src = _source(tmp)
    out = tmp / "data" / "tiny.txt"
    commands = {name: [_script(name), "--help"] for name in MANUAL_SCRIPTS}
    commands["copy"] = [_script("hope-prepare-data"), "--out", str(out), "--url", src.as_uri()]
    procs = {key: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for key, cmd in commands.items()}
    results = {}
    for key, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results[key] = (proc.returncode, stdout, stderr)
    return results, out


def test_installed_console_script_copies_a_file(script_runs):
    results, out = script_runs
    rc, stdout, stderr = results["copy"]
    assert rc == 0, stderr
    _check_report(stdout, out, CONTENT)
    assert out.read_bytes() == CONTENT


def test_every_console_script_answers_help(script_runs):
    results, _ = script_runs
    failures = [f"{name}: exit {rc}; stdout {out[:200]!r}; stderr {err[-500:]!r}"
                for name, (rc, out, err) in results.items()
                if name != "copy" and (rc != 0 or f"usage: {name}" not in out)]
    assert not failures, "\n".join(failures)


def test_pyproject_declares_every_manual_script():
    # [project.scripts] read with a regex: tomllib is 3.11+, and the package supports 3.10
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    scripts = dict(re.findall(r'^\s*([\w-]+)\s*=\s*"([^"]+)"', section, flags=re.M))
    assert set(MANUAL_SCRIPTS) <= set(scripts)  # the manual's, plus additions (hope-export)
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file() and func == "main", name
    installed = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.name.startswith("hope-")}
    for name in MANUAL_SCRIPTS:
        assert name in installed, f"{name} is not installed (pip install -e . refreshes the entry points)"
        assert installed[name].value == scripts[name], f"{name}: installed entry point is stale"
        module, _, func = scripts[name].partition(":")
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{name} names a missing module {module}"
        assert func == "main"
