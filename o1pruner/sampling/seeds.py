"""Sampling seeds: each problem's own, from the spec's seed and the problem's id.

Sample j of problem p is drawn with seed `problem_seed(seed, p.id) + j` (vLLM seeds the j-th
of n > 1 samples the same way). The seeds are spread over [0, 2**62) by a hash, so two spec
seeds share no (problem, sample seed) pair in practice (`seed + i * K` made seeds 0 and 1
share K - 1 of each problem's K), and a problem's samples do not depend on its place in the
problem list: the caches hold them by problem id.
"""

from __future__ import annotations

import hashlib
import json

# Below 2**63 with room for + j: a seed torch.Generator.manual_seed and vLLM's
# SamplingParams(seed=) take.
SEED_RANGE = 2**62


def problem_seed(seed: int, problem_id: str) -> int:
    """The seed of a problem's first sample (a stable hash, the same in every process)."""
    text = json.dumps([seed, str(problem_id)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_RANGE
