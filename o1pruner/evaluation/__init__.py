"""Step 6 of the method: benchmark evaluation against the base model, reports, comparisons.

- `run_eval(spec, model=None, benchmarks=None)`: `o1pruner eval SPEC.yaml` (generation with
  resume, a shared cache for the base model, eval/results.json, report/report.md + plots);
- `run_compare(run_dirs)`: `o1pruner compare RUN_DIR ...` (one markdown table);
- `aes(...)`: the accuracy-efficiency score of METHOD.md;
- `results_table(run_dir)` / `results_rows(results)`: the evaluation rows the web UI shows;
- `headline_lines(results)`: the summary printed at the end of `o1pruner run`.
"""

from o1pruner.evaluation.compare import run_compare
from o1pruner.evaluation.metrics import aes, benchmark_metrics, compare
from o1pruner.evaluation.report import headline_lines, results_rows, results_table
from o1pruner.evaluation.runner import run_eval

__all__ = [
    "aes",
    "benchmark_metrics",
    "compare",
    "headline_lines",
    "results_rows",
    "results_table",
    "run_compare",
    "run_eval",
]
