"""Train from a saved run config, on every rank of a torchrun/srun world.

    torchrun --nproc_per_node 2 -m nemo_neko.train runs/neko-tiny/config.yaml
    python -m nemo_neko.train runs/neko-tiny/config.yaml          # one process

The launcher (``python launch/run.py``) writes the config and runs this for you, after checking
every file the run reads. Exit status 2 with one line on a bad config, record, checkpoint or
missing file.
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
    from nemo_neko.config import ConfigError, load_run_config
    from nemo_neko.data.records import RecordError
    from nemo_neko.model.checkpoint_files import CheckpointError
    from nemo_neko.train.loop import TrainingError, train

    try:
        run = load_run_config(args.config)
        train(run, Path(args.config).resolve().parent)
    except (ConfigError, RecordError, CheckpointError, TrainingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)  # user errors: one line, no traceback
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
