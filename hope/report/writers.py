"""Report writers and the markdown reports of the experiments, under one name (the modules that hold them:
``hope.report.files``, atomic JSON/CSV/text files; ``hope.report.stats``, forgetting and seed spreads;
``hope.report.markdown``, the reports' shared formatting; one module per report: ``seeds_md``, ``experiment_md``,
``continual_md``, ``meta_md``).

Every command writes its outputs through these functions, so a crash (or Ctrl-C) halfway through a write
never leaves a truncated ``metrics.json`` or CSV behind: they write through ``hope.atomic`` (temporary file in
the same directory, fsync, ``os.replace``), re-exported here as ``atomic_open`` and ``write_text``.

The markdown builders take the dicts that the experiments write as JSON (formats in the docstrings of
``experiment_report_md`` and ``continual_report_md``), so a report can be regenerated from the JSON alone.
"""

from __future__ import annotations

from hope.report.continual_md import continual_report_md
from hope.report.experiment_md import experiment_report_md
from hope.report.files import atomic_open, write_csv, write_json, write_text
from hope.report.meta_md import meta_report_md
from hope.report.seeds_md import seeds_table_md
from hope.report.stats import compute_forgetting, mean_spread

__all__ = [
    "atomic_open",
    "write_json",
    "write_csv",
    "write_text",
    "compute_forgetting",
    "experiment_report_md",
    "continual_report_md",
    "meta_report_md",
    "mean_spread",
    "seeds_table_md",
]
