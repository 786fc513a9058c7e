"""``python -m trivy.compat PROGRAM [ARGS...]``: run an ivy-python program on trivy."""

import sys

from ._runner import main

if __name__ == "__main__":
    sys.exit(main())
