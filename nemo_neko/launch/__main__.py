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

Exit status: 0 on success, 2 on a user error (one line: ``error: <where>: <problem>``), 1 when a
stage fails, 75 when SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 stopped the run (training saved a
checkpoint after its current step; one line says where: run the same command again to resume).
"""

import sys
import warnings

import hydra

from nemo_neko.config import register_configs

_STATUS: list[int] = []
"""The exit status of the launched run (Hydra drops the task function's return value)."""


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def _compose_and_launch(cfg) -> None:
    from nemo_neko.launch import launch
    from nemo_neko.launch.errors import report_user_errors

    _STATUS.append(report_user_errors(lambda: launch(cfg)))  # here, before Hydra's own report


def _hydra_main() -> int:
    _compose_and_launch()
    return _STATUS[-1] if _STATUS else 0  # --help, --cfg: nothing launched


def main() -> int:
    """Hydra's command line (overrides, ``--config-dir``, ``--help``) over the shipped configs;
    user errors are one line and exit status 2 (:mod:`nemo_neko.launch.errors`)."""
    from nemo_neko.launch.errors import run_reporting_errors

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|apex).*")
    register_configs()
    return run_reporting_errors(_hydra_main)


if __name__ == "__main__":
    sys.exit(main())
