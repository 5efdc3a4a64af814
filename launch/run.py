"""NeKo's entry point: compose the configuration under conf/ and run it.

    python launch/run.py                                  # the embedded default (tiny, CPU)
    python launch/run.py train.epochs=1 cluster.nproc_per_node=2
    python launch/run.py dry_run=true                     # print config, layout, parameter counts
    python launch/run.py cluster=slurm model=8x22b cluster.account=<a> cluster.partition=<p>
    python launch/run.py cluster=slurm_local model=tiny   # the one-node cluster of scripts/slurm_local

Everything a run needs comes from conf/ and the command-line overrides; this file holds no logic.
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")

import hydra  # noqa: E402

from nemo_neko.config import register_configs  # noqa: E402
from nemo_neko.launch import launch  # noqa: E402

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg) -> int:
    return launch(cfg)


if __name__ == "__main__":
    main()
