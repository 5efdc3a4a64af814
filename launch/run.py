"""NeKo's entry point in a checkout: the same as ``python -m nemo_neko.launch``.

    python launch/run.py                                  # the embedded default
    python launch/run.py train.epochs=1 cluster.nproc_per_node=2
    python launch/run.py dry_run=true                     # print config, layout, parameter counts
    python launch/run.py cluster=slurm model=8x22b cluster.account=<a> cluster.partition=<p>
    python launch/run.py cluster=slurm_local model=tiny   # the one-node cluster of scripts/slurm_local

Everything a run needs comes from the configs (``nemo_neko/conf``) and the command-line
overrides; this file holds no logic.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nemo_neko.launch.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
