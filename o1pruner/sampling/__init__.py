"""Step 1 of the method: pre-sampling K graded solutions per training problem.

`create_engine` starts a generation backend (vLLM or transformers) behind one interface;
`run_presample` is the stage entry (`o1pruner presample SPEC.yaml`).
"""

from o1pruner.sampling.engines import Completion, Engine, create_engine
from o1pruner.sampling.presample import run_presample

__all__ = ["Completion", "Engine", "create_engine", "run_presample"]
