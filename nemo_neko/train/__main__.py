"""Train from a saved run config, on every rank of a torchrun/srun world.

    torchrun --nproc_per_node 2 -m nemo_neko.train runs/neko-tiny/config.yaml
    python -m nemo_neko.train runs/neko-tiny/config.yaml          # one process
    kill -TERM <pid>        # or Ctrl-C, or SIGUSR1: stop after this step, with a checkpoint

The launcher (``python launch/run.py``) writes the config and runs this for you, after checking
every file the run reads.

Exit status: 0 when trained to the end; 75 when SIGTERM, SIGINT or SIGUSR1 stopped it after
saving a checkpoint ("stopped, resumable": run the same command again to resume; the ranks of a
world of several, under torchrun or srun, exit 0 instead and ``<run_dir>/train.stopped``
records the stop, see :mod:`nemo_neko.train.stop`); 2 with one line ``error: ...`` on a bad
config, record, checkpoint or missing file, or when another trainer holds the run directory
(``<run_dir>/train.lock``). A second Ctrl-C aborts at once, without a checkpoint.
"""

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    from nemo_neko.train.stop import exit_status_after_stop, stop_signals, under_torchrun
    from nemo_neko.utils.processes import die_with_parent

    stop_signals().install()  # first: a signal during imports and set-up stops before step one
    if under_torchrun():  # the agent's death (even by SIGKILL) stops this rank as SIGTERM does
        die_with_parent(parent=os.getppid())
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
    from nemo_neko.train.stop import TrainingStopped
    from nemo_neko.utils.lock import LockedError

    user_errors = (ConfigError, RecordError, CheckpointError, TrainingError, LockedError)
    try:
        run = load_run_config(args.config)
        train(run, Path(args.config).resolve().parent)
    except TrainingStopped:
        return exit_status_after_stop()  # the trainer's own line said where it stopped
    except (*user_errors, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)  # user errors: one line, no traceback
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
