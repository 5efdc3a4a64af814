"""``python -m nemo_neko.data {import,stats,pack}`` (see :mod:`nemo_neko.data.cli`)."""

import sys

from nemo_neko.data.cli import main

sys.exit(main())
