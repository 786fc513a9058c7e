"""trio inside a GUI's event loop: a trivy bus with no thread beside the GUI.

trio's guest mode (:func:`trio.lowlevel.start_guest_run`) runs trio's
scheduler in small steps called from the host loop, and its I/O wait in a
helper thread that only sleeps on the sockets. Every task, the bus's and the
application's, runs in the GUI's own thread, between two GUI events: a task
may touch widgets directly, and a widget's callback reaches trio through
:meth:`GuestRun.soon`.

- :func:`trivy.gui.tk.run_in_tk` hosts a run in Tkinter's main loop (stdlib);
- :func:`trivy.gui.qt.run_in_qt` in Qt's (PySide6: the ``gui`` extra).

Closing the last window cancels the run: the bus leaves cleanly (BYE to
every peer), then the GUI's loop ends. See docs/howto/gui.md.
"""

from ._guest import GuestRun

__all__ = ["GuestRun"]
