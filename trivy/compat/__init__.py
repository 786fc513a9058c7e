"""Drop-in replacements for ivy-python's modules, running on trivy's trio core.

An ivy-python agent ports by changing its imports::

    from ivy.ivy import IvyServer          →  from trivy.compat.ivy import IvyServer
    from ivy.std_api import *              →  from trivy.compat.std_api import *

The API stays synchronous: the bus runs in a background thread under
``trio.run``, callbacks run in that thread with ivy-python's signatures, and
every public method may be called from any thread. See ``docs/compat.md``
for what is supported and how it differs from ivy-python.
"""
