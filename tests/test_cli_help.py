"""Consistent command lines: every option's default in --help, one name per concept (older names still accepted),
the same --amp values everywhere."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from hope.cli import args as cli_args

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
