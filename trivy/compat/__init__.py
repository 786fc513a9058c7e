"""Drop-in replacements for ivy-python's modules, running on trivy's trio core.

An ivy-python agent ports by changing its imports::

    from ivy.ivy import IvyServer          →  from trivy.compat.ivy import IvyServer
    from ivy.std_api import *              →  from trivy.compat.std_api import *

or runs unchanged: ``python -m trivy.compat PROGRAM [ARGS...]`` (or ``-m
MODULE``) calls :func:`install`, then runs the program as ``python`` would.
:func:`install` makes ``import ivy.ivy`` and ``import ivy.std_api`` give
those two modules (the same module objects) to everything imported after
it; :func:`uninstall` undoes it.

The API stays synchronous: the bus runs in a background thread under
``trio.run``, callbacks run in order on a thread of the server's own with
ivy-python's signatures, and every public method may be called from any
thread. See ``docs/compat.md``
for what is supported and how it differs from ivy-python.
"""

from ._install import install, uninstall

__all__ = ["install", "uninstall"]
