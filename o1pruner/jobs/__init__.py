"""The job layer: one job per run directory, started from anywhere, stopped without loss.

Everything about a run's life outside the numerical work lives here, one module per
concern:

```
rundir.py    the run directory (`RunDir`): the only contract between workers and the UI
procs.py     process identity: a process is its pid and its start time
lock.py      one job per run: the flock on <run>/.lock (`RunLock`)
progress.py  what a stage shows: a tqdm bar, `progress` events, logs/<stage>.log
worker.py    inside a job: what every job process does (`job_process`, `run_child`)
control.py   job control from outside: `launch`, `status`, `stop`, `failure_report`
history.py   the runs list and deleting a run
```

Each module imports only modules listed above it, and none imports this entry, so there
is no circle. Code outside this package imports from `o1pruner.jobs` (the names below),
never from a module in it; tests may reach into a module for what they check.

`o1pruner/files.py` (atomic writes, append-only JSONL, the torn-tail rule) is *not* part
of this package: the stages use it for their own outputs (pre-samples, reference
log-probs, evaluation generations, graded answers, a spec written by `specio`) with no job
around them, and it depends on nothing but `o1pruner.errors`. Kept at the top, it sits
below every layer, and the grader or a spec writer does not load job control.
"""

from o1pruner.jobs.control import (
    ACTIVE_STATES,
    WORKER_LOG,
    failure_report,
    launch,
    request_stop,
    status,
    stop,
    stop_timeout_of,
    tail_lines,
)
from o1pruner.jobs.history import check_deletable, delete_run, list_runs
from o1pruner.jobs.lock import JobRunning, RunLock
from o1pruner.jobs.procs import pid_alive, signal_pid
from o1pruner.jobs.progress import (
    WARNINGS,
    Progress,
    current_warnings,
    emit_warnings,
    stage_logging,
)
from o1pruner.jobs.rundir import ADHOC_DIR, EXPORTS_DIR, RunDir, run_dir_for
from o1pruner.jobs.worker import (
    PARENT_ENV,
    PARENT_START_ENV,
    STOPPED_EXIT_CODE,
    JobStopped,
    child_env,
    exit_code_of,
    job_process,
    parent_process,
    register_process,
    registered_processes,
    run_child,
    user_message,
    watch_parent,
)

__all__ = [
    # the run directory (and the folders of the jobs that live in a run's)
    "RunDir", "run_dir_for", "ADHOC_DIR", "EXPORTS_DIR",
    # control from outside (the web UI, `o1pruner status|stop`)
    "ACTIVE_STATES", "WORKER_LOG", "failure_report", "launch",
    "request_stop", "status", "stop", "stop_timeout_of", "tail_lines",
    # the history
    "check_deletable", "delete_run", "list_runs",
    # inside a job (a stage, `o1pruner run`, a training launcher, a replica)
    "PARENT_ENV", "PARENT_START_ENV", "STOPPED_EXIT_CODE", "JobStopped", "child_env",
    "exit_code_of", "job_process", "parent_process", "register_process",
    "registered_processes", "run_child", "user_message", "watch_parent",
    # the lock and process identity
    "JobRunning", "RunLock", "pid_alive", "signal_pid",
    # progress
    "WARNINGS", "Progress", "current_warnings", "emit_warnings", "stage_logging",
]
