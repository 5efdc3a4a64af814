"""NeKo's entry point: compose the configuration shipped in ``nemo_neko/conf`` and run it.

    python -m nemo_neko.launch                                 # the embedded default
    python -m nemo_neko.launch dry_run=true                    # config, layout, parameter counts
    python -m nemo_neko.launch train.epochs=1 cluster.nproc_per_node=2
    python -m nemo_neko.launch cluster=slurm model=8x22b cluster.account=<a> cluster.partition=<p>
    python -m nemo_neko.launch --config-dir my_conf data=my_mixture   # your own config groups

``launch/run.py`` in a checkout calls :func:`main`; an installed package (``pip install .``)
needs no checkout. Your own mixtures, models or clusters go in a folder of the same layout
(``my_conf/data/my_mixture.yaml``) added with ``--config-dir`` (Hydra's search path); the shipped
groups stay selectable. This module holds no logic: :func:`nemo_neko.launch.launch` does the work.
"""

import sys
import warnings

import hydra

from nemo_neko.config import register_configs


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def _compose_and_launch(cfg) -> int:
    from nemo_neko.launch import launch

    return launch(cfg)


def main() -> None:
    """Hydra's command line (overrides, ``--config-dir``, ``--help``) over the shipped configs."""
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")
    register_configs()
    _compose_and_launch()


if __name__ == "__main__":
    sys.exit(main())
