"""The Python API (`from hope import ...`), the README's notebook example (run as written), version, licence."""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path

import pytest

import hope

ROOT = Path(__file__).resolve().parents[1]
API = ("load_config", "build_model", "train", "load_model", "generate")


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- notebook example: tests/test_api.py runs it -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_notebook_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) == 5
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "quick.yaml", tmp_path / "configs" / "quick.yaml")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'loss'" in out and "ROMEO:" in out
    assert (tmp_path / "runs" / "notebook.pt").is_file() and (tmp_path / "runs" / "notebook.metrics.jsonl").is_file()


def test_api_names_have_docstrings_and_hints():
    from hope import build_model, generate, load_config, load_model, train

    for func in (load_config, build_model, train, load_model, generate):
        assert callable(func) and (func.__doc__ or "").strip()
        signature = inspect.signature(func)
        assert signature.return_annotation is not inspect.Signature.empty
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert set(API) <= set(hope.__all__)


def test_train_and_generate_stay_callable_after_their_modules_load(tmp_path):
    import hope.sampling  # noqa: F401  (the sampling module has its own name: hope.generate stays the function)
    import hope.train.loop  # noqa: F401
    from hope import generate, train

    assert generate is hope.api.generate and not isinstance(generate, type(hope))

    cfg = hope.load_config(None, dim=32, depth=1, num_heads=2, seq_len=32, max_len=32, attn_window=16, batch_size=2,
                           steps=2, eval_batches=1, warmup_steps=1, device="cpu", model_type="baseline",
                           out=str(tmp_path / "m.pt"))
    result = train(cfg, verbose=False)
    assert result.step == 2 and hope.train.loop.train is not None  # the package still works as a package
    text = generate(hope.load_model(tmp_path / "m.pt"), "ab", max_new_tokens=5, seed=0)
    assert text.startswith("ab") and len(text.encode("utf-8", "surrogatepass")) >= 2
    assert hope.build_model(cfg).num_params() == result.model.num_params()
    with pytest.raises(hope.errors.HopeError):
        hope.load_config(None, dim=-1)


def test_version_licence_changelog():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert hope.__version__ == version
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert f"## {version}" in (ROOT / "CHANGELOG.md").read_text()
