"""``python -m tsadapt.cli.main``: the ``tsadapt`` command."""

import sys

from tsadapt.cli.main import main

sys.exit(main())
