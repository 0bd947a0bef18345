"""Config: example.yaml in sync with the dataclasses, precedence, schedules, round-trip, one-line validation errors.

The litgpt habit: the shipped config file, the dataclasses and the command line are kept in sync by tests, so a
key added in one place and forgotten in another fails here instead of surprising a user.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from hope.cli.args import add_config_args, config_from_args, run
from hope.config import (
    Config,
    ConfigError,
    Meta,
    Metrics,
    Schedule,
    UpdateFrequencies,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_config,
    parse_set,
    read_yaml,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example.yaml"

# The manual's training-type commands, verbatim (the manual lives outside the repository, in the project's
# spec/manual.en.md; `test_manual_lines_are_current` re-reads it when it is present).
MANUAL_TRAINING_LINES = [
    "hope-train --config configs/example.yaml",
    "hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device auto --amp bf16",
    "hope-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 --steps 10000 --batch_size 32 --workers 4",
    "hope-run-experiment --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --amp bf16 --workers 4 --download",
    "hope-meta-train --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --download",
    "hope-continual --config configs/example.yaml --data data/tiny_shakespeare.txt --device cuda:0 --steps_per_stage 1000",
]
# Flags of one command only (added by that command's own parser, not by add_config_args).
COMMAND_SPECIFIC_FLAGS = {"--download", "--steps_per_stage"}
TRAINING_COMMANDS = ("hope-train", "hope-run-experiment", "hope-meta-train", "hope-continual")


def _manual_path() -> Path | None:
    for candidate in (os.environ.get("HOPE_MANUAL"), ROOT / "shared" / "spec" / "manual.en.md",
                      ROOT.parent / "shared" / "spec" / "manual.en.md"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hope-train")
    add_config_args(parser)
    return parser


def _cfg(argv: list[str]) -> Config:
    return config_from_args(_parser().parse_args(argv))


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _key_paths(cls: type, prefix: str = "") -> list[str]:
    """Every key of a config dataclass, recursively; a Schedule is one (schedulable scalar) key."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        out.append(path)
        if dataclasses.is_dataclass(hints[f.name]) and hints[f.name] is not Schedule:
            out += _key_paths(hints[f.name], path + ".")
    return out


def _yaml_key_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 0-based line of that key in the YAML text."""
    out: dict[str, int] = {}

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key, value in node.value:
            path = prefix + key.value
            out[path] = key.start_mark.line
            if isinstance(value, yaml.MappingNode):
                walk(value, path + ".")

    root = yaml.compose(text)
    assert isinstance(root, yaml.MappingNode)
    walk(root, "")
    return out


# ----------------------------------------------------------------------------- example.yaml <-> dataclasses


def test_example_yaml_loads_into_exactly_the_defaults():
    raw = read_yaml(EXAMPLE)
    keys_in_file = set(_yaml_key_lines(EXAMPLE.read_text(encoding="utf-8")))
    schedule_subkeys = {f"{name}.{sub}" for name in ("surprise_scale", "mem_write")
                        for sub in ("start", "end", "warmup_steps")}
    expected = set(_key_paths(Config))
    assert keys_in_file - schedule_subkeys == expected, (
        f"missing from example.yaml: {sorted(expected - keys_in_file)}; "
        f"unknown in example.yaml: {sorted(keys_in_file - schedule_subkeys - expected)}")
    # Loading the file alone (no defaults merged underneath) gives the defaults: the file is complete.
    assert config_from_dict(raw) == Config()
    assert load_config(EXAMPLE) == Config()


def test_every_config_key_is_commented_in_example_yaml():
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    key_lines = _yaml_key_lines(text)
    uncommented = []
    all_keys = _key_paths(Config)
    sections = {path for path in all_keys if any(other.startswith(path + ".") for other in all_keys)}
    for path in _key_paths(Config):
        assert path in key_lines, f"{path} is missing from configs/example.yaml"
        if path in sections:  # a section is documented by its keys' comments
            continue
        own = lines[key_lines[path]]
        section = lines[key_lines[path.rsplit(".", 1)[0]]] if "." in path else ""
        if "#" not in own and "#" not in section:
            uncommented.append(path)
    # The schedule's sub-keys are explained on the schedule's own line.
    for name in ("surprise_scale", "mem_write"):
        assert "schedulable" in lines[key_lines[name]], f"{name} must say it is schedulable"
    assert not uncommented, f"keys without a comment in configs/example.yaml: {uncommented}"


def _logits(cfg: Config, max_len: int):
    import torch

    from hope.models import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, max_len=max_len)).eval()
    with torch.no_grad():
        return model(torch.arange(96)[None] * 7 % 256)[0]


def test_max_len_is_what_example_yaml_says():
    """max_len is the baseline's attention window and changes nothing in HOPE (segments are seq_len bytes, its
    attention spans attn_window): the example's comment says so, not "positions per forward pass"."""
    import torch

    small = dict(dim=32, depth=1, num_heads=2, seq_len=32, attn_window=16, memory_capacity=8, top_k=2)
    hope = Config(model_type="hope", **small)
    assert torch.equal(_logits(hope, 32), _logits(hope, 128))
    baseline = Config(model_type="baseline", **small)
    assert not torch.allclose(_logits(baseline, 32), _logits(baseline, 128))  # 96 bytes: past the 32-byte window
    comment = EXAMPLE.read_text(encoding="utf-8").split("\nmax_len:", 1)[1].split("\n", 1)[0]
    assert "baseline only" in comment and "HOPE ignores it" in comment and "per forward pass" not in comment


def test_mps_is_documented_as_refused():
    comment = EXAMPLE.read_text(encoding="utf-8").split("\ndevice:", 1)[1].split("\n", 1)[0]
    assert "MPS is refused" in comment
    with pytest.raises(ConfigError, match="Apple MPS is not supported"):
        config_from_dict({"device": "mps"})


def test_loaded_values_have_the_declared_types():
    cfg = load_config(EXAMPLE)
    for obj in (cfg, cfg.update_frequencies, cfg.metrics, cfg.meta, cfg.surprise_scale, cfg.mem_write):
        for name, tp in get_type_hints(type(obj)).items():
            value = getattr(obj, name)
            if tp in (int, float, str, bool):
                assert type(value) is tp, f"{type(obj).__name__}.{name} = {value!r} is not {tp.__name__}"
    assert isinstance(cfg.surprise_scale, Schedule) and isinstance(cfg.mem_write, Schedule)
    assert isinstance(cfg.update_frequencies, UpdateFrequencies)
    assert isinstance(cfg.metrics, Metrics) and isinstance(cfg.meta, Meta)
    assert cfg.data is None
    assert cfg.head_dim * cfg.num_heads == cfg.dim


def test_int_given_for_float_is_converted_and_integral_float_for_int():
    cfg = load_config(overrides=[{"ff_mult": 3, "steps": 1e3, "lr": 1}])
    assert type(cfg.ff_mult) is float and cfg.ff_mult == 3.0
    assert type(cfg.steps) is int and cfg.steps == 1000
    assert type(cfg.lr) is float


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # PyYAML's YAML 1.1 reads `3e-4` as a string; users write learning rates that way.
    cfg = load_config(_write(tmp_path, "lr: 3e-4\nmin_lr: 1E-5\nsteps: 2e3\n"))
    assert cfg.lr == pytest.approx(3e-4) and cfg.min_lr == pytest.approx(1e-5) and cfg.steps == 2000
    assert parse_set("meta.lr=5e-5") == {"meta": {"lr": 5e-5}}


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", ["surprise_scale", "mem_write"])
def test_schedulable_key_accepts_scalar_and_mapping(tmp_path, name):
    scalar = load_config(_write(tmp_path, f"{name}: 0.5\n", "a.yaml"))
    assert getattr(scalar, name) == Schedule(0.5, 0.5, 0)
    ramp = load_config(_write(tmp_path, f"{name}:\n  start: 0.0\n  end: 1.0\n  warmup_steps: 100\n", "b.yaml"))
    assert getattr(ramp, name) == Schedule(0.0, 1.0, 100)
    # integers are fine for the float fields of a schedule
    assert getattr(load_config(overrides=[{name: 1}]), name) == Schedule(1.0, 1.0, 0)
    # and both forms work from the command line
    assert getattr(_cfg(["--set", f"{name}=0.25"]), name) == Schedule(0.25, 0.25, 0)
    ramp_flag = _cfg(["--set", f"{name}={{start: 0.0, end: 0.5, warmup_steps: 10}}"])
    assert getattr(ramp_flag, name) == Schedule(0.0, 0.5, 10)


def test_schedule_ramps_linearly_and_holds_the_end():
    s = Schedule(start=0.0, end=1.0, warmup_steps=100)
    assert s.at(0) == 0.0
    assert s.at(25) == pytest.approx(0.25)
    assert s.at(50) == pytest.approx(0.5)
    assert s.at(100) == 1.0 and s.at(10_000) == 1.0
    assert Schedule(0.3, 0.7, 0).at(0) == 0.7  # no warmup: the end value from the start
    down = Schedule(start=2.0, end=1.0, warmup_steps=4)
    assert [down.at(i) for i in range(6)] == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0, 1.0])


@pytest.mark.parametrize("value, fragments", [
    ({"start": 0.5}, ["surprise_scale", "'start' and 'end'"]),
    ({"start": 0.0, "end": 1.0, "warmup": 5}, ["surprise_scale.warmup", "did you mean 'surprise_scale.warmup_steps'"]),
    ("high", ["surprise_scale", "expected a number or {start, end, warmup_steps}"]),
    (True, ["surprise_scale", "expected a number"]),
    ({"start": 0.0, "end": 1.0, "warmup_steps": -1}, ["surprise_scale", "warmup_steps must be >= 0"]),
    ({"start": -1.0, "end": 1.0}, ["surprise_scale", ">= 0"]),
])
def test_bad_schedule_is_rejected(value, fragments):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"surprise_scale": value})
    _assert_one_line(err.value, fragments)


def test_mem_write_gate_must_stay_in_unit_interval():
    with pytest.raises(ConfigError, match=r"mem_write.*\[0, 1\]"):
        load_config(overrides=[{"mem_write": {"start": 0.0, "end": 1.5, "warmup_steps": 3}}])


# ----------------------------------------------------------------------------- precedence and flags


def test_precedence_defaults_then_file_then_flags(tmp_path):
    path = _write(tmp_path, "steps: 50\nbatch_size: 4\nlr: 0.002\nseed: 7\nmeta:\n  use: true\n")
    file_only = _cfg(["--config", str(path)])
    assert (file_only.steps, file_only.batch_size, file_only.lr, file_only.seed) == (50, 4, 0.002, 7)
    assert file_only.meta.use is True
    assert file_only.meta.inner_steps == Meta().inner_steps  # a nested section merges over the defaults
    assert file_only.dim == Config().dim  # untouched key: the default

    cfg = _cfg(["--config", str(path), "--steps", "9", "--batch_size", "2", "--seq_len", "64", "--lr", "0.01",
                "--workers", "3", "--device", "cpu", "--amp", "fp16", "--data", "corpus.txt", "--seed", "11",
                "--set", "update_frequencies.mem_write=8", "--set", "metrics.track_ppl=false", "--set", "depth=2"])
    assert cfg.steps == 9 and cfg.batch_size == 2 and cfg.seq_len == 64 and cfg.lr == 0.01
    assert cfg.num_workers == 3 and cfg.device == "cpu" and cfg.data == "corpus.txt" and cfg.seed == 11
    assert cfg.amp is True and cfg.amp_dtype == "fp16"
    assert cfg.update_frequencies.mem_write == 8
    assert cfg.update_frequencies.error_update == UpdateFrequencies().error_update
    assert cfg.metrics.track_ppl is False and cfg.metrics.track_accuracy is True
    assert cfg.depth == 2
    assert cfg.meta.use is True  # from the file, not overridden
    # no flags at all: the defaults
    assert _cfg([]) == Config()


@pytest.mark.parametrize("value, amp, dtype", [
    ("bf16", True, "bf16"), ("fp16", True, "fp16"), ("BF16", True, "bf16"), ("off", False, "bf16"),
    ("on", True, "bf16"),
])
def test_amp_flag(value, amp, dtype):
    cfg = _cfg(["--amp", value])
    assert (cfg.amp, cfg.amp_dtype) == (amp, dtype)


def test_amp_flag_off_overrides_file(tmp_path):
    path = _write(tmp_path, "amp: true\namp_dtype: fp16\n")
    cfg = _cfg(["--config", str(path), "--amp", "off"])
    assert cfg.amp is False


def test_bad_amp_flag_and_bad_set_are_config_errors():
    with pytest.raises(ConfigError, match="--amp must be bf16, fp16 or off, got 'fp8'"):
        _cfg(["--amp", "fp8"])
    with pytest.raises(ConfigError, match="--set expects key=value, got 'steps'"):
        _cfg(["--set", "steps"])
    with pytest.raises(ConfigError, match="did you mean 'update_frequencies.mem_write'"):
        _cfg(["--set", "update_frequencies.mem_wrte=4"])


def test_manual_training_flags_exist_in_add_config_args():
    options = {s for action in _parser()._actions for s in action.option_strings}
    for line in MANUAL_TRAINING_LINES:
        for flag in re.findall(r"--[a-z_]+", line):
            if flag not in COMMAND_SPECIFIC_FLAGS:
                assert flag in options, f"manual flag {flag} (in `{line}`) is not in add_config_args"
    # the troubleshooting section and the list of flags
    for flag in ("--device", "--workers", "--amp", "--steps", "--batch_size", "--seq_len", "--lr", "--data", "--seed",
                 "--set", "--config"):
        assert flag in options


def test_manual_lines_are_current():
    """The embedded copy above matches the manual's training commands (when the manual is available)."""
    manual = _manual_path()
    if manual is None:  # the embedded copy is still checked by the test above
        return
    found = set()
    for snippet in re.findall(r"`([^`]+)`", manual.read_text(encoding="utf-8")):
        if snippet.split(" ", 1)[0] in TRAINING_COMMANDS:
            found.update(re.findall(r"--[a-z_]+", snippet))
    embedded = {flag for line in MANUAL_TRAINING_LINES for flag in re.findall(r"--[a-z_]+", line)}
    assert found <= embedded, f"manual flags missing from MANUAL_TRAINING_LINES: {sorted(found - embedded)}"


def test_eval_commands_get_no_training_flags():
    parser = argparse.ArgumentParser()
    add_config_args(parser, training=False)
    options = {s for action in parser._actions for s in action.option_strings}
    assert {"--config", "--data", "--device", "--amp", "--seed", "--seq_len", "--batch_size", "--set"} <= options
    assert not {"--steps", "--lr", "--workers"} & options


# ----------------------------------------------------------------------------- dump / reload


def test_dump_yaml_reloads_identically(tmp_path):
    path = _write(tmp_path, "model_type: baseline\ndim: 96\nnum_heads: 3\nseq_len: 64\nmax_len: 64\n"
                            "surprise_scale: 0.5\nmem_write: {start: 0.0, end: 1.0, warmup_steps: 20}\n")
    cfg = _cfg(["--config", str(path), "--data", "x.txt", "--amp", "fp16", "--lr", "3e-4",
                "--set", "meta.use=true", "--set", "update_frequencies.optimizer_step=2"])
    text = dump_yaml(cfg)
    dumped = _write(tmp_path, text, "dumped.yaml")
    again = load_config(dumped)
    assert again == cfg
    assert dump_yaml(again) == text
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # every key is present in the dump (a checkpoint's config is complete, not a diff)
    assert set(_yaml_key_lines(text)) >= set(_key_paths(Config))
    assert yaml.safe_load(text)["mem_write"] == {"start": 0.0, "end": 1.0, "warmup_steps": 20}


def test_defaults_dump_equals_example_values():
    assert yaml.safe_load(dump_yaml(Config())) == config_to_dict(load_config(EXAMPLE))


# ----------------------------------------------------------------------------- validation


def _assert_one_line(exc: BaseException, fragments: list[str]) -> None:
    message = str(exc)
    assert "\n" not in message, f"message is not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("overrides, fragments", [
    # unknown keys, with the closest name
    ({"num_head": 8}, ["unknown config key 'num_head'", "did you mean 'num_heads'"]),
    ({"update_frequencies": {"mem_wrte": 4}},
     ["unknown config key 'update_frequencies.mem_wrte'", "did you mean 'update_frequencies.mem_write'"]),
    ({"meta": {"inner_step": 2}}, ["'meta.inner_step'", "did you mean 'meta.inner_steps'"]),
    ({"metrics": {"track_acc": True}}, ["'metrics.track_acc'", "did you mean 'metrics.track_accuracy'"]),
    # wrong types
    ({"dim": "big"}, ["dim", "expected int", "'big'"]),
    ({"dim": 12.5}, ["dim", "expected int"]),
    ({"dim": True}, ["dim", "expected int"]),
    ({"lr": "fast"}, ["lr", "expected float"]),
    ({"amp": "yes"}, ["amp", "expected bool"]),
    ({"model_type": 3}, ["model_type", "expected str"]),
    ({"data": 5}, ["data", "expected str"]),
    ({"metrics": 3}, ["metrics", "expected a mapping"]),
    ({"update_frequencies": {"mem_write": "often"}}, ["update_frequencies.mem_write", "expected int"]),
    ({"meta": {"use": "maybe"}}, ["meta.use", "expected bool"]),
    # shapes
    ({"dim": 100, "num_heads": 3}, ["dim (100) must be divisible by num_heads (3)"]),
    ({"max_len": 64, "seq_len": 128}, ["max_len (64) must be >= seq_len (128)"]),
    # non-positive sizes and steps
    ({"dim": 0}, ["dim must be > 0, got 0"]),
    ({"depth": -1}, ["depth must be > 0, got -1"]),
    ({"num_heads": 0}, ["num_heads must be > 0"]),
    ({"batch_size": 0}, ["batch_size must be > 0"]),
    ({"seq_len": 0}, ["seq_len must be > 0"]),
    ({"steps": 0}, ["steps must be > 0, got 0"]),
    ({"steps": -5}, ["steps must be > 0, got -5"]),
    ({"max_len": 0}, ["max_len must be > 0"]),
    ({"grad_accum_steps": 0}, ["grad_accum_steps must be > 0"]),
    ({"lr": 0.0}, ["lr must be > 0"]),
    ({"update_frequencies": {"mem_write": 0}}, ["update_frequencies.mem_write must be > 0"]),
    ({"num_workers": -1}, ["num_workers must be >= 0"]),
    ({"memory_capacity": -1}, ["memory_capacity must be >= 0"]),
    ({"recall_episodes": 0}, ["recall_episodes must be >= 1, got 0"]),
    ({"stream": {"bptt_segments": 0}}, ["stream.bptt_segments must be > 0"]),
    ({"stream": {"use": True, "reset_bytes": 200}, "seq_len": 128},
     ["stream.reset_bytes (200) must be >= stream.bptt_segments * seq_len (256)"]),
    ({"stream": {"use": True}, "cms_objective": "task", "seq_len": 120},
     ["stream.bptt_segments * seq_len (240)", "multiple of update_frequencies.error_update (32)"]),
    # memory
    ({"top_k": 65, "memory_capacity": 64}, ["top_k (65)", "memory_capacity (64)"]),
    ({"top_k": 0}, ["top_k (0)"]),
    ({"error_decay": 1.0}, ["error_decay must be in [0, 1)"]),
    # enumerations
    ({"amp_dtype": "fp32"}, ["amp_dtype must be one of bf16, fp16, got 'fp32'"]),
    ({"model_type": "gpt"}, ["unknown model_type 'gpt'", "hope, baseline"]),
    ({"optimizer_type": "adam"}, ["unknown optimizer_type 'adam'", "adamw"]),
    ({"cms": "tree"}, ["cms must be one of chain, mlp"]),
    ({"cms_objective": "exact"}, ["cms_objective must be one of surrogate, task, got 'exact'"]),
    ({"cms_objective": "task", "cms": "mlp"}, ["cms_objective: task", "needs model_type: hope and cms: chain",
                                               "cms: mlp"]),
    ({"cms_objective": "task", "model_type": "baseline"}, ["cms_objective: task", "model_type: baseline"]),
    ({"device": "tpu"}, ["device must be auto, cpu, cuda or cuda:N, got 'tpu'"]),
    ({"device": "cuda:x"}, ["device must be", "'cuda:x'"]),
])
def test_validation_errors_are_one_line(overrides, fragments):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[overrides])
    _assert_one_line(err.value, fragments)


def test_unknown_key_far_from_every_name_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[{"zzzqqqxx": 1}])
    assert "unknown config key 'zzzqqqxx'" in str(err.value) and "did you mean" not in str(err.value)


def test_valid_edge_values_are_accepted():
    cfg = load_config(overrides=[{"memory_capacity": 0, "top_k": 99, "max_len": 128, "seq_len": 128,
                                  "device": "cuda:1", "grad_clip_norm": 0.0, "meta": {"inner_steps": 0}}])
    assert cfg.memory_capacity == 0 and cfg.max_len == cfg.seq_len and cfg.device == "cuda:1"
    assert load_config(overrides=[{"cms_objective": "task"}]).cms_objective == "task"


@pytest.mark.parametrize("text, line", [
    ("dim: 128\nlr: [1, 2\nsteps: 3\n", 3),
    ("dim: 128\n  depth: 4\n", 2),
    ("dim: 128\nmeta:\n  use: true\n   inner_steps: 2\n", 4),
    ("dim: 128\nseq_len: 64\n\tdepth: 2\n", 3),
])
def test_malformed_yaml_names_the_line(tmp_path, text, line):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    _assert_one_line(err.value, ["malformed YAML", str(path), f"line {line},"])


def test_missing_or_non_mapping_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)  # a directory
    assert load_config(_write(tmp_path, "# only a comment\n", "empty.yaml")) == Config()


# ----------------------------------------------------------------------------- the CLI error boundary


def _mini_cli(argv: list[str]) -> int:
    """What every training command does first: parse, resolve the config, inside the error boundary."""
    args = _parser().parse_args(argv)

    def body() -> int:
        config_from_args(args)
        return 0

    return run(body)


@pytest.mark.parametrize("argv, fragment", [
    (["--set", "update_frequencies.mem_wrte=4"], "did you mean 'update_frequencies.mem_write'"),
    (["--seq_len", "512"], "max_len (256) must be >= seq_len (512)"),
    (["--steps", "0"], "steps must be > 0"),
    (["--amp", "fp8"], "--amp must be bf16, fp16 or off"),
    (["--config", "/nonexistent/cfg.yaml"], "config file not found"),
])
def test_cli_config_error_exits_2_with_one_line(capsys, argv, fragment):
    assert _mini_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_cli_malformed_yaml_exits_2(tmp_path, capsys):
    path = _write(tmp_path, "dim: 128\nlr: [1, 2\nsteps: 3\n")
    assert _mini_cli(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: malformed YAML") and "line 3" in err and err.count("\n") == 1


def test_cli_valid_config_exits_0(capsys):
    assert _mini_cli(["--config", str(EXAMPLE), "--steps", "3"]) == 0
    assert capsys.readouterr().err == ""


CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("hope_file, baseline_file", [("hope_cpu.yaml", "nanogpt_cpu.yaml"),
                                                      ("hope_large.yaml", "baseline_large.yaml")])
def test_compared_configs_match_parameters_and_tokens(hope_file: str, baseline_file: str) -> None:
    """docs/results.md compares these pairs at equal parameters (±10%) and equal tokens and recipe."""
    from hope.models import count_params

    hope_cfg, base_cfg = load_config(CONFIGS / hope_file), load_config(CONFIGS / baseline_file)
    assert (hope_cfg.model_type, base_cfg.model_type) == ("hope", "baseline")
    assert abs(count_params(hope_cfg) / count_params(base_cfg) - 1) <= 0.10
    recipe = ("dim", "num_heads", "max_len", "seq_len", "batch_size", "steps", "lr", "min_lr", "warmup_steps", "beta2",
              "weight_decay", "grad_clip_norm", "dropout", "optimizer_type", "grad_accum_steps")
    assert {k: getattr(hope_cfg, k) for k in recipe} == {k: getattr(base_cfg, k) for k in recipe}
