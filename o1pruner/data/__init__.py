"""Data sets: the registry, local files, hub ids and the arithmetic generator.

Every stage gets its problems through `load_problems`, which returns validated
`Problem(id, problem, gold)` rows whatever the source.
"""

from o1pruner.data.listing import describe_datasets, preview_dataset
from o1pruner.data.loading import Problem, dataset_fingerprint, load_problems
from o1pruner.data.registry import RegistryEntry, registry, resolve_data_dir

__all__ = [
    "Problem",
    "RegistryEntry",
    "dataset_fingerprint",
    "describe_datasets",
    "load_problems",
    "preview_dataset",
    "registry",
    "resolve_data_dir",
]
