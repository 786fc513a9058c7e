"""``python -m trivy``: the trivy command-line tool (see :mod:`trivy._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
