"""`hope-eval`: loss, perplexity, bits per byte and top-1/5/10 accuracy of a checkpoint on the validation split.

Run as:
    hope-eval --ckpt hope_checkpoint.pt                                  # synthetic quick-check corpus
    hope-eval --ckpt hope_checkpoint.pt --data data/tiny_shakespeare.txt --samples 0   # whole split

Uses the checkpoint's EMA weights when it has them. Prints one JSON object.
"""

from __future__ import annotations

import json
import sys

from hope.cli.args import add_eval_amp_arg, add_samples_arg, eval_amp, new_parser


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("hope-eval", "Evaluate a checkpoint on the validation split.")
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="checkpoint path")
    parser.add_argument("--data", help="corpus file (default: the checkpoint's data, else the synthetic corpus)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch_size", type=int, help="windows per batch (default: the checkpoint's)")
    parser.add_argument("--seq_len", type=int, help="window length (default: the checkpoint's)")
    add_samples_arg(parser, 256, "evenly spread windows of the split (0 = the whole split)", "--max_windows")
    parser.add_argument("--split", choices=["val", "train"], default="val", help="which split to score")
    add_eval_amp_arg(parser)
    args = parser.parse_args(argv)

    from hope.cli.args import run

    def body() -> int:
        from hope.checkpoint import load_model
        from hope.data.corpus import load_corpus
        from hope.errors import HopeError
        from hope.eval.lm import evaluate_lm
        from hope.runtime import resolve_device

        device = resolve_device(args.device)
        model, cfg, _ = load_model(args.ckpt, device)
        seq_len = args.seq_len or cfg.seq_len
        if seq_len <= 0 or (args.batch_size is not None and args.batch_size <= 0):
            raise HopeError("--seq_len and --batch_size must be > 0")
        if args.samples < 0:
            raise HopeError(f"--samples (--max_windows) must be >= 0 (0 = the whole split), got {args.samples}")
        amp, amp_dtype = eval_amp(args.amp)
        corpus = load_corpus(args.data if args.data else cfg.data, seed=cfg.seed)
        corpus.check_length(seq_len + 1)
        data = corpus.val if args.split == "val" else corpus.train
        metrics = evaluate_lm(model, data, seq_len, args.batch_size or cfg.batch_size, device,
                              max_windows=args.samples or None, amp=amp, amp_dtype=amp_dtype)
        print(json.dumps({"model_type": cfg.model_type, "split": args.split, "data": corpus.name, **metrics}))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
