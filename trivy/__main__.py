"""``python -m trivy``: the trivy command-line tool (see :mod:`trivy.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
