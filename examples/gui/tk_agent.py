"""An Ivy agent with a Tk window, trio running as a guest of Tk's main loop.

The window lists the peers, shows the texts received and sends what you
type. There is one thread: trio's tasks run between Tk's events, so the
window stays responsive however busy the bus is. Closing the window leaves
the bus cleanly (BYE to every peer)::

    python examples/gui/tk_agent.py --bus 127:2010
"""

from __future__ import annotations

import argparse
import tkinter as tk

from bus_panel import BusPanel  # (beside this file)

from trivy.gui import GuestRun
from trivy.gui.tk import start_in_tk


class TkAgent:
    """The window: peers on the left, texts on the right, a line to send."""

    def __init__(self, root: tk.Tk, panel: BusPanel) -> None:
        self.root = root
        self.panel = panel
        self.run: GuestRun[None] | None = None
        root.title(f"{panel.name} (trivy)")
        root.geometry("720x420")
        left = tk.Frame(root)
        left.pack(side=tk.LEFT, fill=tk.Y, padx=6, pady=6)
        tk.Label(left, text="Peers").pack(anchor=tk.W)
        self.peers = tk.Listbox(left, width=22)
        self.peers.pack(fill=tk.Y, expand=True)
        right = tk.Frame(root)
        right.pack(side=tk.LEFT, fill=tk.BOTH, expand=True, padx=6, pady=6)
        self.count = tk.Label(right, text="Received: 0")
        self.count.pack(anchor=tk.W)
        self.texts = tk.Text(right, height=16, state=tk.DISABLED)
        self.texts.pack(fill=tk.BOTH, expand=True)
        line = tk.Frame(right)
        line.pack(fill=tk.X, pady=(6, 0))
        self.entry = tk.Entry(line)
        self.entry.pack(side=tk.LEFT, fill=tk.X, expand=True)
        self.entry.bind("<Return>", lambda _event: self.send())
        self.send_button = tk.Button(line, text="Send", command=self.send)
        self.send_button.pack(side=tk.LEFT, padx=(6, 0))
        self.status = tk.Label(right, text=panel.status, anchor=tk.W)
        self.status.pack(fill=tk.X)

    def start(self) -> GuestRun[None]:
        """Start the agent in Tk's loop: closing the window leaves the bus,
        then destroys the window."""
        self.run = start_in_tk(self.root, self.panel.run, self.draw)
        self.root.protocol("WM_DELETE_WINDOW", self.run.cancel)
        self.run.add_done_callback(lambda _run: self.root.destroy())
        return self.run

    def send(self) -> None:
        """The Send button: the entry's text goes to the bus."""
        text = self.entry.get().strip()
        if text and self.run is not None:
            self.entry.delete(0, tk.END)
            self.run.soon(self.panel.send, text)

    def draw(self, panel: BusPanel) -> None:
        """Show the panel's state (called by a trio task: same thread as Tk)."""
        if list(self.peers.get(0, tk.END)) != panel.peers:
            self.peers.delete(0, tk.END)
            self.peers.insert(tk.END, *panel.peers)
        self.count.configure(text=f"Received: {panel.received}   Sent: {panel.sent}")
        self.status.configure(text=panel.status)
        self.texts.configure(state=tk.NORMAL)
        self.texts.delete("1.0", tk.END)
        self.texts.insert(tk.END, "\n".join(panel.texts))
        self.texts.see(tk.END)
        self.texts.configure(state=tk.DISABLED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bus", default=None, help="NETWORKS:PORT (default: $IVYBUS)")
    parser.add_argument("-n", "--name", default="TkAgent")
    parser.add_argument("-r", "--regexp", default="(.*)", help="what to show (default: all)")
    args = parser.parse_args()
    root = tk.Tk()
    run = TkAgent(root, BusPanel(args.name, args.bus, args.regexp)).start()
    root.mainloop()
    run.result()  # raises what the agent raised


if __name__ == "__main__":
    main()
