"""Consistent command lines: every option's default in --help, one name per concept (older names still accepted),
the same --amp values everywhere."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

import pytest
import torch

from hope.cli import args as cli_args
from hope.errors import HopeError

COMMANDS = ("train", "eval", "eval_long", "track_long", "eval_binned", "infer", "meta_train", "run_experiment",
            "continual", "plot_reports", "prepare_data")


def help_text(command: str, capsys) -> str:
    module = importlib.import_module(f"hope.cli.{command}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command builds (captured as it parses)."""
    seen = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **kw):
        seen["parser"] = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module = importlib.import_module(f"hope.cli.{command}")
    with pytest.raises(SystemExit):
        module.main([])
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    return seen["parser"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_is_in_help(command, capsys, monkeypatch):
    options = help_text(command, capsys).split("options:", 1)[1]
    entries = {}  # first flag -> its help entry, joined into one line
    for chunk in re.split(r"\n(?=  -)", options):
        chunk = " ".join(chunk.split())
        if chunk.startswith("-"):
            entries[chunk.split()[0].rstrip(",")] = chunk
    parser = parser_of(command, monkeypatch)
    for action in parser._actions:
        if action.default is None or action.default is False or action.default == [] or action.dest == "help":
            continue
        entry = entries[action.option_strings[0]]
        assert "default" in entry and str(action.default)[:12] in entry.replace(" ", ""), (command, entry)


@pytest.mark.parametrize("command, old", [("eval", "--max_windows"), ("eval_binned", "--windows"),
                                          ("eval_long", "--trials"), ("track_long", "--trials"),
                                          ("meta_train", "--eval_pairs")])
def test_one_name_for_the_sample_count_and_old_names_still_work(command, old, monkeypatch):
    parser = parser_of(command, monkeypatch)
    required = {"eval_long": ["--gap", "8"]}.get(command, [])
    assert parser.parse_args(required + ["--samples", "7"]).samples == 7
    assert parser.parse_args(required + [old, "9"]).samples == 9


@pytest.mark.parametrize("command", ["train", "meta_train", "run_experiment", "continual"])
def test_training_commands_share_overwrite(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    required = ["--steps_per_stage", "1"] if command == "continual" else []
    assert parser.parse_args(required + ["--overwrite"]).overwrite is True
    assert parser.parse_args(required).overwrite is False


@pytest.mark.parametrize("value, expected", [("bf16", {"amp": True, "amp_dtype": "bf16"}),
                                             ("FP16", {"amp": True, "amp_dtype": "fp16"}),
                                             ("on", {"amp": True}), ("off", {"amp": False}),
                                             ("fp32", {"amp": False})])
def test_one_amp_vocabulary(value, expected):
    assert cli_args.parse_amp(value) == expected


# ----------------------------------------------------------------------------- every command, its shared flags

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = dict(re.findall(r'^(hope-[a-z-]+) = "([\w.:]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                          re.M))  # [project.scripts] (tomllib is Python 3.11+)
# Commands that run a model (--device, --amp), and those that train from a config (add_config_args, --overwrite).
MODEL_COMMANDS = ("train", "eval", "eval_long", "track_long", "eval_binned", "infer", "meta_train",
                  "run_experiment", "continual")
TRAINING_COMMANDS = ("train", "meta_train", "run_experiment", "continual")
STEPS_ELSEWHERE = {"continual": "--steps"}  # counts its steps with --steps_per_stage (a stray --steps is refused)


def _library_calls() -> dict[str, list]:
    """command -> the library functions it calls: a parameter they share with every command (SHARED_PARAMS)
    must be a flag of the command."""
    from hope.eval.binned import binned_rows
    from hope.eval.lm import evaluate_lm
    from hope.eval.long import track_long
    from hope.sampling import generate_bytes
    from hope.runtime import autocast

    return {"eval": [evaluate_lm], "eval_long": [track_long], "track_long": [track_long],
            "eval_binned": [binned_rows], "infer": [generate_bytes, autocast]}


SHARED_PARAMS = {"amp": "--amp", "enabled": "--amp", "device": "--device", "seed": "--seed", "batch_size": "--batch_size"}


def options_of(command: str, monkeypatch) -> set[str]:
    return set(parser_of(command, monkeypatch)._option_string_actions)


def test_every_console_command_is_checked():
    assert {target.split(":")[0].rsplit(".", 1)[1] for target in SCRIPTS.values()} == set(COMMANDS) | {"export"}


@pytest.mark.parametrize("command", COMMANDS + ("export",))
def test_every_command_has_the_shared_flags_that_apply(command, monkeypatch):
    options = options_of(command, monkeypatch)
    if command in MODEL_COMMANDS:
        assert {"--device", "--amp"} <= options, command
    if command in TRAINING_COMMANDS:
        reference = argparse.ArgumentParser()
        cli_args.add_config_args(reference)
        expected = set(reference._option_string_actions) - {STEPS_ELSEWHERE.get(command)}
        assert expected | {"--overwrite"} <= options, sorted(expected - options)
    for function in _library_calls().get(command, []):
        for param in inspect.signature(function).parameters:
            if param in SHARED_PARAMS:
                assert SHARED_PARAMS[param] in options, (command, function.__name__, param)


def _readme_flags() -> dict[str, set[str]]:
    """command -> every --flag the README writes after it: in a command line (`hope-x --a ... --b`, up to the end
    of its code span or line) and in the prose of its own section (### ...: `hope-x`)."""
    named: dict[str, set[str]] = {}
    section: list[str] = []
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = re.findall(r"`hope-([a-z-]+)`", line) if line.startswith("### ") else []
            continue
        for command, rest in re.findall(r"\bhope-([a-z-]+)((?: +[^ `|;)]+)*)", line):
            named.setdefault(command, set()).update(re.findall(r"(?<![\w-])--\w+", rest))
        if len(section) == 1:
            named.setdefault(section[0], set()).update(re.findall(r"`(--\w+)", line))
    return {command.replace("-", "_"): flags for command, flags in named.items()}


def test_every_flag_the_readme_names_exists(monkeypatch):
    named = _readme_flags()
    assert set(named) <= set(COMMANDS) | {"export"}, sorted(set(named) - set(COMMANDS) - {"export"})
    assert {"--resume", "--gap", "--lengths", "--metrics_jsonl"} <= set().union(*named.values())  # it reads them
    missing = {command: sorted(flags - options_of(command, monkeypatch)) for command, flags in named.items()}
    assert not any(missing.values()), missing


# ----------------------------------------------------------------------------- what the flags do


@pytest.mark.parametrize("command, target, argv", [
    ("eval_long", "hope.eval.long.track_long", ["--gap", "8"]),
    ("track_long", "hope.eval.long.track_long", ["--out", "{tmp}/x.csv"]),
    ("eval_binned", "hope.eval.binned.binned_rows", ["--out", "{tmp}/x.csv"])])
def test_amp_reaches_the_evaluation(command, target, argv, tmp_path, monkeypatch, capsys):
    seen = []

    def fake(*args, **kwargs):
        seen.append((kwargs["amp"], kwargs["amp_dtype"]))
        raise HopeError("stop here")

    monkeypatch.setattr(target, fake)
    main = importlib.import_module(f"hope.cli.{command}").main
    argv = [a.format(tmp=tmp_path) for a in argv]
    for amp, expected in (([], (False, "bf16")), (["--amp", "fp16"], (True, "fp16")), (["--amp", "on"], (True, "bf16"))):
        assert main(argv + amp) == 2
        assert seen.pop() == expected
    capsys.readouterr()
    assert main(argv + ["--amp", "fp8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --amp must be bf16, fp16 or off, got 'fp8'" and not seen


def test_infer_generates_under_autocast(monkeypatch, capsys):
    from hope.cli import infer

    seen = []

    def fake_generate(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        yield ord("x")

    monkeypatch.setattr("hope.checkpoint.load_model", lambda path, device: (None, None, None))
    monkeypatch.setattr("hope.sampling.generate_bytes", fake_generate)
    assert infer.main(["--device", "cpu", "--prompt", "a", "--max_new_tokens", "1", "--amp", "bf16"]) == 0
    assert seen.pop() == (True, torch.bfloat16) and capsys.readouterr().out == "ax\n"
    assert infer.main(["--device", "cpu", "--prompt", "a", "--max_new_tokens", "1"]) == 0
    assert seen.pop()[0] is False


def test_continual_refuses_steps(capsys):
    from hope.cli import continual

    assert continual.main(["--steps", "5", "--steps_per_stage", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: hope-continual trains --steps_per_stage steps") and "--steps_per_stage 5" in err


@pytest.mark.parametrize("command", ["train", "meta_train", "run_experiment"])
def test_download_without_data_fetches_the_default_file(command, tmp_path, monkeypatch, capsys):
    """--download is never ignored: without --data (and no data in the config) it fetches tiny shakespeare to
    data/tiny_shakespeare.txt and the run trains on it."""
    import hope.data.download as download

    monkeypatch.chdir(tmp_path)
    fetched, trained = [], []

    def fake_fetch(url, out, timeout=30.0):  # nothing downloaded
        fetched.append(Path(out))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("text")
        return Path(out), 4, "sha"

    monkeypatch.setattr(download, "fetch", fake_fetch)

    def fake_run(cfg, *args, **kwargs):
        trained.append(cfg.data)
        raise HopeError("stop here")

    for target in ("hope.train.loop.train", "hope.experiments.meta.run_meta_experiment",
                   "hope.experiments.compare.run_experiment"):
        monkeypatch.setattr(target, fake_run)
    main = importlib.import_module(f"hope.cli.{command}").main
    assert main(["--download", "--device", "cpu"]) == 2
    assert fetched == [Path(cli_args.DOWNLOAD_DATA)] and trained == [cli_args.DOWNLOAD_DATA]
    assert main(["--download", "--data", "a.txt,b.txt"]) == 2  # one file to fetch, or an error
    assert "--download fetches one file" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["flag", "config"])
def test_mps_is_refused_with_its_reason(where, capsys):
    from hope.cli import train

    argv = ["--device", "mps"] if where == "flag" else ["--set", "device=mps"]
    assert train.main(argv) == 2
    assert "Apple MPS is not supported" in capsys.readouterr().err
