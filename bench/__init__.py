"""trivy's benchmark suite: trivy agents against ivy-python 4.0 agents.

Run it with ``python -m bench`` (``--quick`` for a seconds-long smoke run);
see ``bench/README.md``. :mod:`bench.agents` holds the agent programs, which
always run as separate processes; :mod:`bench.runner` starts them, reads
their JSON lines and prints the table.
"""
