"""`hope-track-long`: long-context recall over a sweep of gaps, for one or several checkpoints, as a CSV.

Run as:
    hope-track-long --ckpt hope_checkpoint.pt --device cuda:0 --gaps 256,512,1024,2048
    hope-track-long --ckpt reports/hope_checkpoint.pt,reports/baseline_checkpoint.pt --gaps 256,512,1024,2048 \
        --data data/tiny_shakespeare.txt --out reports/long_context.csv
    hope-track-long --task mqar --pairs 16 --ckpt hope_checkpoint.pt --gaps 0,32,128,512 --out reports/mqar.csv
    hope-track-long --task copy --ckpt a.pt,b.pt --gaps 0,256,1024,4096,16384 --out reports/copy.csv

Writes --out (default reports/long_context.csv) with header gap,recall_prob,chance,trials,model_type,checkpoint,
step,data;
several comma-separated checkpoints go into one CSV so HOPE and the baseline can be compared on the same
episodes. Gaps may exceed max_len: the models stream the episode segment by segment (the baseline slides its
window, so it cannot recall beyond it). On a collection of documents each episode's filler is a span of one
validation document, never running into the next one; a note per gap counts the documents not longer than it.

`--task mqar` sweeps multi-query associative recall (hope.data.mqar) instead; the header is then
gap,accuracy,first_accuracy,value_prob,chance,repeat,elimination,pairs,answers,trials,model_type,checkpoint,step,
data, accuracy being the top-1 accuracy over a row's answers averaged over rows, first_accuracy the same on each
row's first query (no answer shown yet), chance 1/64, repeat 1/P (repeating the last value written) and
elimination H_P/P (answering with a written value not yet answered: a lookup beats it, and 1/P on the first query).
`--answers hidden` puts filler where the query half shows each answer (Zoology's format): elimination is then 1/P.

`--task copy` sweeps repeated-text recall (a --passage of validation text, the gap, the passage again, after a
--lead of other text; see hope-eval-long); the header is then
gap,copy_gain,copy_gain_se,loss_first,loss_second,loss_control,control_gain,control_gain_se,samples,passage,lead,
model_type,checkpoint,step,data,max_len,attn_window,reach, losses in nats per byte over bytes 1..N-1 of each
occurrence, copy_gain = loss_first - loss_second, copy_gain_se its standard error over the passages, the three
control columns empty without `--control`, reach how far attention carries a byte (depth x (window - 1)).
`hope-plot-reports --recall_csv` draws it as copy_gain.png.
"""

from __future__ import annotations

import argparse
import sys

from hope.cli.args import add_eval_amp_arg, add_long_task_args, add_samples_arg, eval_amp, new_parser, run

COLUMNS = ("gap", "recall_prob", "chance", "trials", "model_type", "checkpoint", "step", "data")
MQAR_COLUMNS = ("gap", "accuracy", "first_accuracy", "value_prob", "chance", "repeat", "elimination", "pairs",
                "answers", "trials", "model_type", "checkpoint", "step", "data")
COPY_COLUMNS = ("gap", "copy_gain", "copy_gain_se", "loss_first", "loss_second", "loss_control", "control_gain",
                "control_gain_se", "samples", "passage", "lead", "model_type", "checkpoint", "step", "data", "max_len",
                "attn_window", "reach")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-track-long", "Recall probability over a sweep of gaps.")
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="checkpoint path(s), comma-separated")
    parser.add_argument("--gaps", default="256,512,1024,2048",
                        help="comma-separated gaps in bytes (copy: between the two occurrences)")
    add_long_task_args(parser)
    add_samples_arg(parser, 64, "recall episodes (MQAR rows, copy passages) per gap", "--trials")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (same seed = same episodes)")
    parser.add_argument("--data", help="filler text, copy passages (default: each checkpoint's data, else the "
                                       "synthetic corpus)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, default=16, help="episodes per forward pass")
    add_eval_amp_arg(parser)
    parser.add_argument("--memory_capacity", type=int,
                        help="evaluate HOPE with this many episodic-bank slots per layer (default: as trained)")
    parser.add_argument("--out", default="reports/long_context.csv", help="CSV to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.eval.long import parse_gaps, split_paths, track_long
        from hope.report.writers import write_csv

        from hope.runs import check_writable

        gaps = parse_gaps(args.gaps)
        amp, amp_dtype = eval_amp(args.amp)
        check_writable([args.out])  # before minutes of evaluation, not after
        rows = track_long(split_paths(args.ckpt), gaps, args.samples, args.seed, args.data, args.device,
                          args.batch_size, amp=amp, amp_dtype=amp_dtype, memory_capacity=args.memory_capacity,
                          task=args.task, pairs=args.pairs, hide_answers=args.answers == "hidden",
                          passage=args.passage, lead=args.lead,
                          control=args.control)
        path = write_csv(args.out, rows, {"mqar": MQAR_COLUMNS, "copy": COPY_COLUMNS}.get(args.task, COLUMNS))
        print(f"wrote {path}")
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
