"""`hope-eval-long`: long-context recall of one checkpoint at one gap; prints {recall_prob, chance, ...} as JSON.

Run as:
    hope-eval-long --gap 2048                                   # hope_checkpoint.pt, 64 episodes
    hope-eval-long --ckpt reports/baseline_checkpoint.pt --gap 512 --samples 128 --data data/tiny_shakespeare.txt
    hope-eval-long --task mqar --pairs 8 --gap 1024             # key lookup: {accuracy, first_accuracy, ...}
    hope-eval-long --task copy --passage 256 --gap 4096         # repeated text: {copy_gain, copy_gain_se, ...}

Each episode writes a key/value pair, then `gap` bytes of filler text (validation split of --data, else of the
checkpoint's data, else the synthetic corpus), then asks for the key; recall_prob is the mean probability the
model gives the value, chance what a model that remembers nothing gets. The baseline cannot see past its
max_len window, so at gaps beyond it its recall falls to chance (a note says so). On a collection of documents
(a directory, glob, manifest or prepared collection) each episode's filler is a span of one validation document,
never running into the next one; a note on stderr counts the documents not longer than the gap, left out.

`--task mqar` scores multi-query associative recall instead (hope.data.mqar): --pairs key/value pairs, a gap of
random filler bytes, then every key again in a shuffled order. It prints accuracy (top-1 over a row's answers,
averaged over rows), first_accuracy (the same on each row's first query), value_prob (mean p(value)), chance
(1/64), repeat (1/P, what repeating the last value written scores) and elimination (H_P/P, what answering with a
written value not yet answered scores) on one line, so neither a copy nor an elimination passes for a lookup.
`--answers hidden` scores rows whose query half shows no answer (Zoology's format; elimination is then 1/P).

`--task copy` scores repeated-text recall (hope.eval.long.copy_gain): a validation passage of --passage bytes,
--gap bytes of other validation text, the passage again, after a lead of --lead bytes of other text (the same
bytes that end the gap, so a model that sees no further back than the lead and the gap reads both occurrences
after the same text). It prints loss_first and loss_second (mean next-byte loss in nats over bytes 1..N-1 of each
occurrence), copy_gain = loss_first - loss_second and copy_gain_se (the per-passage difference's sd / sqrt(n)),
over --samples passages. A sliding-window model's gain is 0 once the gap is past its attention's reach (a note
says so); a memory that carries text keeps some. `--control` also reads each row with another passage in the
first occurrence's place: loss_control, and control_gain = loss_control - loss_second, the passage's own worth
net of any drift of the loss along the stream (a memory state that wanders on long streams).
"""

from __future__ import annotations

import argparse
import json
import sys

from hope.cli.args import add_eval_amp_arg, add_long_task_args, add_samples_arg, eval_amp, new_parser, run


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-eval-long", "Recall probability at one gap.")
    parser.add_argument("--gap", type=int, required=True,
                        help="filler bytes between the write and the query (copy: between the two occurrences)")
    add_long_task_args(parser)
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="checkpoint path")
    add_samples_arg(parser, 64, "recall episodes (MQAR rows, copy passages)", "--trials")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (same seed = same episodes)")
    parser.add_argument("--data", help="filler text, copy passages (default: the checkpoint's data, else the synthetic "
                                       "corpus)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, default=16, help="episodes per forward pass")
    add_eval_amp_arg(parser)
    parser.add_argument("--memory_capacity", type=int,
                        help="evaluate HOPE with this many episodic-bank slots per layer (default: as trained)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.eval.long import track_long

        def notes_only(line: str) -> None:  # stdout stays one JSON object
            if line.startswith("note"):
                print(line, file=sys.stderr)

        amp, amp_dtype = eval_amp(args.amp)
        (row,) = track_long([args.ckpt], [args.gap], args.samples, args.seed, args.data, args.device,
                            args.batch_size, amp=amp, amp_dtype=amp_dtype, log=notes_only,
                            memory_capacity=args.memory_capacity, task=args.task, pairs=args.pairs,
                            hide_answers=args.answers == "hidden", passage=args.passage, lead=args.lead,
                            control=args.control)
        keys = {"mqar": ("accuracy", "first_accuracy", "value_prob", "chance", "repeat", "elimination", "pairs",
                         "answers", "trials"),
                "copy": ("copy_gain", "copy_gain_se", "loss_first", "loss_second",
                         *(("loss_control", "control_gain", "control_gain_se") if args.control else ()),
                         "samples", "passage", "lead"),
                "episodes": ("recall_prob", "chance", "trials")}[args.task]
        print(json.dumps({k: row[k] for k in (*keys, "gap", "model_type")}))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
