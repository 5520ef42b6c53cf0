"""The model: plain data and pure logic, no sockets, no processes, no clock.

Scripts (what a client does), transcripts (what happened), the echo oracle,
the properties and their verdicts, limits and errors. Everything here is
tested without I/O; nothing here imports from ``harness.drive``,
``harness.run`` or ``strategies``.
"""
