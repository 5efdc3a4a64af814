"""Train from a saved run config, on every rank of a torchrun/srun world.

    torchrun --nproc_per_node 2 -m nemo_neko.train runs/neko-tiny/config.yaml
    python -m nemo_neko.train runs/neko-tiny/config.yaml          # one process

The launcher (``python launch/run.py``) writes the config and runs this for you.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemo_neko.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("config", help="a run's config.yaml (its folder is the run directory)")
    args = parser.parse_args(argv)
    from nemo_neko.utils.logs import quiet_libraries

    quiet_libraries()
    from nemo_neko.config import load_run_config
    from nemo_neko.train.loop import train

    run = load_run_config(args.config)
    train(run, Path(args.config).resolve().parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
