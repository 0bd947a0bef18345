"""hope: HOPE (Nested Learning) byte-level language models, a Transformer++ baseline, and the tools to train,
compare and measure them.

    from hope import load_config, build_model, train, load_model, generate

See `hope.api` for the five functions, `hope.cli` for the console commands.
"""

from hope.api import build_model, generate, load_config, load_model, train

__version__ = "0.1.0"  # kept equal to pyproject.toml's version by tests/test_api.py

__all__ = ["__version__", "load_config", "build_model", "train", "load_model", "generate"]
