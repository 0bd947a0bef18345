"""`python -m bench`: see `bench/__init__.py`."""

from bench.suite import main

raise SystemExit(main())
