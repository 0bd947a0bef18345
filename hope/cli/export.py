"""`hope-export`: a training checkpoint -> a shareable folder of `model.safetensors` + `config.json`.

Run as:
    hope-export --ckpt hope_checkpoint.pt --out exported/hope
    hope-export --ckpt reports/baseline_checkpoint.pt --out exported/baseline --overwrite

The weights are the evaluation weights (EMA when the checkpoint has them); loading the folder back
(`hope.load_model("exported/hope")`, `hope.export.load_exported`, or `HopeHub.from_pretrained`) reads only JSON and
safetensors, never a pickle. Prints the files written.
"""

from __future__ import annotations

import sys

from hope.cli.args import add_overwrite_arg, new_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("hope-export", "Export a checkpoint to model.safetensors + config.json.")
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="training checkpoint to export")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    add_overwrite_arg(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from pathlib import Path

        from hope.export import CONFIG, WEIGHTS, export_checkpoint
        from hope.runs import check_writable, refuse_overwrite

        targets = [Path(args.out) / WEIGHTS, Path(args.out) / CONFIG]
        check_writable(targets)
        if not args.overwrite:
            refuse_overwrite(targets)
        for path in export_checkpoint(args.ckpt, args.out):
            print(f"wrote {path}")
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
