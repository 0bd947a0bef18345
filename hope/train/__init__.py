"""Training: the loop, schedules, EMA, optimisers, meta-learning.

`hope.train` is also the API function `train(cfg)` (`from hope import train`, hope.api). Loading any module of
this package binds the name `hope.train` to the package, so the package is callable too: calling it calls
`hope.train.loop.train`, imported on the first call (importing `hope.train.schedule` stays light). It is the one
callable module in `hope`; renaming the package would free the name at the cost of every import of it.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import inspect

    from hope.train.loop import TrainResult


class _CallablePackage(types.ModuleType):
    """This package, callable as `hope.train.loop.train` (whose signature help() shows)."""

    def __call__(self, *args: Any, **kwargs: Any) -> "TrainResult":
        from hope.train.loop import train

        return train(*args, **kwargs)

    @property
    def __signature__(self) -> "inspect.Signature":
        import inspect

        from hope.train.loop import train

        return inspect.signature(train)


sys.modules[__name__].__class__ = _CallablePackage
