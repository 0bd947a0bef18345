"""Training: the loop, schedules, EMA, optimisers, meta-learning. Calling `hope.train(cfg)` trains (hope.api)."""

from hope.api import callable_module as _callable_module
from hope.api import train as _train

_callable_module(__name__, _train)
