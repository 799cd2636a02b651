"""``python -m specactor.worker``: see :mod:`specactor.worker.process`."""

import sys

from .process import main

sys.exit(main())
