#!/usr/bin/env bash
# The GPU readiness check (issue 21, item 7). On one CUDA GPU, in under 8 minutes, it runs and times:
#   1. the manual's training command, short: `hope-train --config configs/example.yaml --device cuda:0 --amp bf16`
#      (60 steps, batch 32), then the same with `--amp fp16` (GradScaler; skipped steps counted);
#   2. a resume: the bf16 checkpoint continued with `--resume` for 20 more steps (onto the GPU: RNG states, optimiser);
#   3. generation: `hope-infer` from the resumed checkpoint;
#   4. the CUDA tests: `python -m pytest -q -s -m cuda tests` (tests/test_cuda.py: chunked == per-token memory in
#      float64 on the GPU, a HOPE model's forward/backward equal to the CPU's, the float32 fast-weight error with
#      TF32 off and on);
#   5. the bench's train, ops and generate sections (`python -m bench --quick --only <section> --device cuda:0`);
# and prints one table (step, status, wall seconds, key figure, command). Exit status 1 if any step failed, 2 if
# there is no GPU. Each step has its own timeout, and all of them share one budget (HOPE_GPU_CHECK_BUDGET_S, 450 s):
# a step that would start past it is reported FAILED, not run.
#
# Run from the repository root with the package installed (`pip install -r requirements.txt && pip install -e .`,
# a CUDA build of torch):   bash scripts/gpu_check.sh
# It uses whatever torch is installed and the `python`, `hope-train`, `hope-infer` on PATH. It never downloads:
# training reads data/tiny_shakespeare.txt when it is there, else the synthetic corpus (HOPE_GPU_CHECK_DATA sets a
# file). Outputs (checkpoints, logs, bench JSON) go to a fresh temporary directory, named at the end.
#
# Settings (environment): HOPE_GPU_CHECK_DEVICE (cuda:0), _STEPS (60), _BATCH (32), _RESUME_STEPS (20),
# _WORKERS (4), _GEN_BYTES (200), _BENCH (--quick), _BUDGET_S (450), _DATA, PYTHON (python).
# A CPU dry run of the script itself (every step except what needs CUDA; the CUDA tests report skipped):
#   HOPE_GPU_CHECK_DEVICE=cpu HOPE_GPU_CHECK_STEPS=4 HOPE_GPU_CHECK_BATCH=2 HOPE_GPU_CHECK_RESUME_STEPS=2 \
#   HOPE_GPU_CHECK_GEN_BYTES=16 HOPE_GPU_CHECK_BENCH=--tiny HOPE_GPU_CHECK_BUDGET_S=1800 bash scripts/gpu_check.sh

set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2

DEVICE=${HOPE_GPU_CHECK_DEVICE:-cuda:0}
STEPS=${HOPE_GPU_CHECK_STEPS:-60}
BATCH=${HOPE_GPU_CHECK_BATCH:-32}
RESUME_STEPS=${HOPE_GPU_CHECK_RESUME_STEPS:-20}
WORKERS=${HOPE_GPU_CHECK_WORKERS:-4}
GEN_BYTES=${HOPE_GPU_CHECK_GEN_BYTES:-200}
BENCH=${HOPE_GPU_CHECK_BENCH:---quick}
BUDGET=${HOPE_GPU_CHECK_BUDGET_S:-450}
PY=${PYTHON:-python}
DATA=${HOPE_GPU_CHECK_DATA:-}
if [[ -z $DATA && -f data/tiny_shakespeare.txt ]]; then DATA=data/tiny_shakespeare.txt; fi
DATA_FLAGS=()
[[ -n $DATA ]] && DATA_FLAGS=(--data "$DATA")
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hope-gpu-check.XXXXXX") || exit 2

# ------------------------------------------------------------------------------------------ the machine
echo "== environment"
"$PY" - "$DEVICE" <<'EOF'
import sys
import torch
device = sys.argv[1]
print(f"torch {torch.__version__} (CUDA build {torch.version.cuda}), torch.cuda.is_available() = "
      f"{torch.cuda.is_available()}, device {device}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
if device.startswith("cuda") and not torch.cuda.is_available():
    print("gpu_check: no CUDA GPU is visible to this torch (a CPU-only build, or no driver/device); nothing was run. "
          "Install a CUDA build of torch, or set HOPE_GPU_CHECK_DEVICE=cpu for a dry run of the script itself.",
          file=sys.stderr)
    sys.exit(2)
EOF
rc=$?
if (( rc != 0 )); then
    (( rc == 2 )) || echo "gpu_check: python/torch failed to start (exit $rc)" >&2
    rmdir "$WORK" 2>/dev/null
    exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total \
    --format=csv,noheader 2>/dev/null
echo "data: ${DATA:-synthetic corpus}; outputs: $WORK; budget ${BUDGET} s"

# ----------------------------------------------------------------------- key figures from each step's output
cat > "$WORK/figures.py" <<'EOF'
"""Prints one step's key figure; exits 1 when the output shows a failure the exit status did not."""
import json
import math
import re
import sys
from pathlib import Path

kind, args = sys.argv[1], sys.argv[2:]


def records(path):
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def fail(message):
    print(message)
    sys.exit(1)


if kind in ("train", "resume"):
    recs = records(args[0])
    final = [r for r in recs if r.get("final") and r.get("split") == "val"]
    if not final:
        fail(f"no final validation record in {Path(args[0]).name}")
    r = final[-1]
    text = (f"step {r['step']}, val loss {r['loss']:.3f}, {r.get('tokens_per_s', 0):,.0f} tok/s, "
            f"{r.get('skipped_steps', 0)} skipped steps")
    if kind == "resume":  # args: metrics, log, the checkpoint's step, the step to reach
        found = re.findall(r"resumed from .* at step (\d+)", Path(args[1]).read_text(errors="replace"))
        logged = [x["step"] for x in recs if x.get("split") == "train" and not x.get("final")]
        text = f"resumed at step {found[-1] if found else '?'}: " + text
        if not found or int(found[-1]) != int(args[2]) or r["step"] != int(args[3]) or min(logged) <= int(args[2]):
            fail(text + f" (expected a resume at step {args[2]} reaching step {args[3]})")
    if not math.isfinite(r["loss"]):
        fail(text + " (non-finite)")
    print(text)
elif kind == "infer":
    log, n, wall = Path(args[0]).read_bytes(), int(args[1]), float(args[2])
    if b"Traceback" in log or len(log) < n // 2:
        fail(f"{len(log)} bytes of output for {n} asked")
    print(f"{n} bytes, {n / wall:.1f} bytes/s including start-up and prompt")
elif kind == "pytest":
    log = Path(args[0]).read_text(errors="replace")
    summary = [line for line in log.splitlines() if re.search(r"\b(passed|failed|skipped|error|deselected)\b", line)]
    last = summary[-1].strip("= ") if summary else "no pytest summary"
    stated = re.findall(r"fp32 fast-weight error \((\w+).*tf32 off (\S+), tf32 on (\S+)", log)
    text = last + ("; fp32 fast-weight rel. error (tf32 off / on): " + ", ".join(
        f"{kind} {off} / {on}" for kind, off, on in stated) if stated else "")
    if args[1].startswith("cuda") and not re.search(r"\d+ passed", last):
        fail(text + " (nothing ran on the GPU)")
    print(text)
elif kind == "bench":
    section, path = args
    res = json.loads(Path(path).read_text())
    parts = []
    if section == "ops":
        for r in res["ops"]:
            parts.append(f"seq {r['seq_len']}: HOPE {r['hope']['ops']:,} ops = {r['ratio']:.1f}x baseline")
        gen = [r for r in res["ops"] if "generation_ops_per_byte" in r["hope"]]
        if gen:
            parts.append(f"generation {gen[0]['hope']['generation_ops_per_byte']:,.0f} ops/byte")
    elif section == "train":
        for r in res["train"]:
            parts.append(f"seq {r['seq_len']}: HOPE {r['hope']['tokens_per_s']:,.0f} tok/s = {r['ratio']:.2f}x "
                         f"baseline ({r['baseline']['tokens_per_s']:,.0f})")
    elif section == "generate":
        g = res["generate"]
        for name in ("hope", "baseline"):
            if "error" in g.get(name, {}):
                fail(f"{name}: {g[name]['error']}"[:300])
        h, b = g["hope"]["rows"][-1], g["baseline"]["rows"][-1]
        parts.append(f"at {h['bytes']} bytes: HOPE {h['ms_per_token']:.2f} ms/byte, baseline "
                     f"{b['ms_per_token']:.2f} ({h['ms_per_token'] / b['ms_per_token']:.1f}x)")
    targets = [t for t in res.get("targets", []) if t["met"] is not None]
    if targets:
        parts.append("targets: " + ", ".join(f"{t['target']} {'met' if t['met'] else 'NOT met'}" for t in targets))
    print("; ".join(parts))
EOF

# ------------------------------------------------------------------------------------------------- steps
ROWS=()  # one row per step, fields separated by SEP
SEP=$'\x1f'
FAILED=0

# run_step NAME TIMEOUT_S FIGURE_KIND FIGURE_ARGS -- COMMAND...: runs COMMAND under `timeout` (its own limit, cut to
# what is left of the budget), its output shown and kept in $WORK/NAME.log; then the key figure. "@WALL" in
# FIGURE_ARGS becomes the step's wall seconds.
run_step() {
    local name=$1 limit=$2 kind=$3 figargs=$4
    shift 5
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if (( left < 20 )); then
        ROWS+=("$name$SEP""FAILED$SEP""0.0$SEP""not run: the ${BUDGET} s budget is spent$SEP$*")
        FAILED=$(( FAILED + 1 ))
        return
    fi
    (( limit > left )) && limit=$left
    local log="$WORK/$name.log"
    echo
    echo "== [$name] (timeout ${limit} s) $*"
    local t0 t1 rc status figure wall
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s%N)
    wall=$(printf '%d.%d' $(( (t1 - t0) / 1000000000 )) $(( (t1 - t0) / 100000000 % 10 )))
    status=ok
    if (( rc == 124 || rc == 137 )); then
        status=FAILED figure="timed out after ${limit} s"
    else
        figure=$("$PY" "$WORK/figures.py" "$kind" ${figargs//@WALL/$wall} 2>&1) || status=FAILED
        if (( rc != 0 )); then
            status=FAILED
            figure="exit $rc: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160)"
        fi
    fi
    [[ $status == ok ]] || FAILED=$(( FAILED + 1 ))
    echo "== [$name] $status in ${wall} s: ${figure//$'\n'/ }"
    ROWS+=("$name$SEP$status$SEP$wall$SEP${figure//$'\n'/ }$SEP$*")
}

TRAIN=(hope-train --config configs/example.yaml "${DATA_FLAGS[@]}" --device "$DEVICE" --steps "$STEPS"
       --batch_size "$BATCH" --workers "$WORKERS")
run_step train_bf16 150 train "$WORK/bf16.metrics.jsonl" -- "${TRAIN[@]}" --amp bf16 --out "$WORK/bf16.pt"
run_step train_fp16 150 train "$WORK/fp16.metrics.jsonl" -- "${TRAIN[@]}" --amp fp16 --out "$WORK/fp16.pt"
run_step resume 100 resume "$WORK/resumed.metrics.jsonl $WORK/resume.log $STEPS $(( STEPS + RESUME_STEPS ))" -- \
    hope-train --resume "$WORK/bf16.pt" --device "$DEVICE" --amp bf16 --steps $(( STEPS + RESUME_STEPS )) \
    --out "$WORK/resumed.pt"
CKPT="$WORK/resumed.pt"
[[ -f $CKPT ]] || CKPT="$WORK/bf16.pt"
run_step generate 60 infer "$WORK/generate.log $GEN_BYTES @WALL" -- \
    hope-infer --ckpt "$CKPT" --device "$DEVICE" --prompt "ROMEO:" --max_new_tokens "$GEN_BYTES" --seed 0
run_step tests_cuda 150 pytest "$WORK/tests_cuda.log $DEVICE" -- \
    "$PY" -m pytest -q -s -m cuda -p no:cacheprovider tests
for section in train ops generate; do
    run_step "bench_$section" 150 bench "$section $WORK/bench_$section.json" -- \
        "$PY" -m bench "$BENCH" --only "$section" --device "$DEVICE" --out "$WORK/bench_$section.json"
done

# ------------------------------------------------------------------------------------------------- table
echo
echo "GPU check: $("$PY" -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' 2>/dev/null),"\
     "device $DEVICE, $(( $(date +%s) - START )) s in all; outputs and logs in $WORK"
echo
echo "| step | status | wall s | key figure | command |"
echo "|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
    IFS=$SEP read -r name status wall figure cmd <<< "$row"
    echo "| $name | $status | $wall | $figure | \`${cmd//$WORK/\$WORK}\` |"
done
echo
if (( FAILED > 0 )); then
    echo "gpu_check: $FAILED step(s) FAILED (logs: $WORK/<step>.log)"
    exit 1
fi
echo "gpu_check: all steps ok"
