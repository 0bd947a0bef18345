"""`hope-eval-binned`: loss and perplexity by position bin (how much context each prediction had), as a CSV.

Run as:
    hope-eval-binned --ckpt hope_checkpoint.pt --device cuda:0 --data data/tiny_shakespeare.txt --lengths 64,128,256,512
    hope-eval-binned --ckpt reports/hope_checkpoint.pt,reports/baseline_checkpoint.pt --data data/tiny_shakespeare.txt \
        --lengths 64,128,256,512 --samples 128 --out reports/binned_ppl.csv

Reads --samples (alias --windows) validation windows of max(lengths) + 1 bytes (streaming across segments when longer than
seq_len), and writes --out (default reports/binned_ppl.csv) with header
bin_start,bin_end,loss,ppl,tokens,model_type,checkpoint,step,data,max_len,attn_window,mem_write: one row per bin
[0,64), [64,128), ... and checkpoint. `--mem_write 0` evaluates HOPE with its memory writes off (what the writes carry).
"""

from __future__ import annotations

import argparse
import sys

from hope.cli.args import add_eval_amp_arg, add_samples_arg, eval_amp, new_parser, run

COLUMNS = ("bin_start", "bin_end", "loss", "ppl", "tokens", "model_type", "checkpoint", "step", "data", "max_len",
           "attn_window", "mem_write")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("hope-eval-binned", "Perplexity by position bin.")
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="checkpoint path(s), comma-separated")
    parser.add_argument("--data", help="corpus file (default: the checkpoint's data, else the synthetic corpus)")
    parser.add_argument("--lengths", default="64,128,256,512", help="strictly increasing bin ends, comma-separated")
    add_samples_arg(parser, 64, "validation windows", "--windows")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_eval_amp_arg(parser)
    parser.add_argument("--mem_write", type=float, default=None,
                        help="HOPE: gate every memory write at this value in [0, 1] during the evaluation (0: memories "
                             "frozen at their learned initial state; default: the checkpoint's schedule)")
    parser.add_argument("--out", default="reports/binned_ppl.csv", help="CSV to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from hope.eval.binned import binned_rows, parse_lengths
        from hope.eval.long import split_paths
        from hope.report.writers import write_csv

        from hope.runs import check_writable

        lengths = parse_lengths(args.lengths)
        amp, amp_dtype = eval_amp(args.amp)
        check_writable([args.out])  # before minutes of evaluation, not after
        rows = binned_rows(split_paths(args.ckpt), args.data, lengths, args.samples, args.batch_size, args.device,
                           amp=amp, amp_dtype=amp_dtype, mem_write=args.mem_write)
        path = write_csv(args.out, rows, COLUMNS)
        print(f"wrote {path}")
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
