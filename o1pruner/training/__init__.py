"""Length-harmonizing training (O1-Pruner steps 3-5) and the SFT / DPO baselines.

Entry point: `run_train(spec)`, called by `o1pruner train SPEC.yaml`.
"""

from o1pruner.training.stage import run_train

__all__ = ["run_train"]
