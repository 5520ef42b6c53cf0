"""The drivers: everything that touches the operating system.

Server processes, the script executor (client sockets), observation of the
server process (``/proc``, psutil), quiescence, network namespaces and the
packet view. Imports only ``harness.model``.
"""
