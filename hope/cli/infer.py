"""`hope-infer`: generate text from a checkpoint, streaming bytes to the terminal as they are sampled.

Run as:
    hope-infer --ckpt hope_checkpoint.pt --prompt "Hello, HOPE!" --max_new_tokens 200
    hope-infer --ckpt hope_checkpoint.pt --prompt "ROMEO:" --max_new_tokens 500 --temperature 0.8 --top_k 40 --seed 1
"""

from __future__ import annotations

import codecs
import sys

from hope.cli.args import add_eval_amp_arg, eval_amp, new_parser


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("hope-infer", "Generate text with a trained checkpoint.")
    parser.add_argument("--ckpt", default="hope_checkpoint.pt", help="checkpoint path")
    parser.add_argument("--prompt", default="", help="prompt text (UTF-8)")
    parser.add_argument("--max_new_tokens", type=int, default=200, help="bytes to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top_k", type=int, default=None, help="sample only among the k most likely bytes")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible output)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_eval_amp_arg(parser)
    args = parser.parse_args(argv)

    from hope.cli.args import run

    def body() -> int:
        from hope.checkpoint import load_model
        from hope.errors import HopeError
        from hope.sampling import generate_bytes
        from hope.runtime import autocast, resolve_device

        if args.max_new_tokens < 0:
            raise HopeError("--max_new_tokens must be >= 0")
        if not args.temperature >= 0:
            raise HopeError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
        if args.top_k is not None and args.top_k < 1:
            raise HopeError(f"--top_k must be >= 1, got {args.top_k}")
        amp, amp_dtype = eval_amp(args.amp)
        device = resolve_device(args.device)
        model, _, _ = load_model(args.ckpt, device)
        out = sys.stdout
        if hasattr(out, "reconfigure"):  # a terminal that cannot show a character gets '?', not a traceback
            out.reconfigure(errors="replace")
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # invalid UTF-8 -> U+FFFD
        prompt = args.prompt.encode("utf-8", "surrogateescape")  # the bytes typed, even if not valid UTF-8
        out.write(prompt.decode("utf-8", errors="replace"))
        out.flush()
        tokens = generate_bytes(model, prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                seed=args.seed, device=device)
        with autocast(device, amp, amp_dtype):  # the generator's forward passes run inside (same thread)
            for token in tokens:
                text = decoder.decode(bytes([token]))
                if text:
                    out.write(text)
                    out.flush()
        out.write(decoder.decode(b"", final=True) + "\n")
        out.flush()
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
