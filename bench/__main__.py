"""``python -m bench``: run the benchmark suite (see :func:`bench.runner.main`)."""

import sys

from bench.runner import main

sys.exit(main())
