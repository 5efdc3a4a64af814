"""NeKo's main entry point.

    python launch/run.py

Until the training loop lands (issue "Training NeKo on Megatron-Core"), the main job is the
router-overhead benchmark: a NeKo MoE layer (task-guided router, task-aware dispatcher) against
Megatron-Core's stock MoE layer on this machine, with their speed ratio. The command stays the
same when the job becomes "train the tiny NeKo and print its correction report". Extra
arguments are passed to the benchmark (``--help`` lists them).
"""

import os
import sys
import warnings

# Megatron-Core warns at import that Transformer Engine / apex are absent (expected on CPU).
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.router_overhead import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
