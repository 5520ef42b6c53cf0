"""Hypothesis profiles for the whole project; choose one with --hypothesis-profile.

* ``ci`` (the default): what ``pytest -n auto`` runs; the whole suite stays
  well under ten minutes on two cores.
* ``dev``: a quick look while editing.
* ``fuzz``: a long campaign; run it on its own, e.g.
  ``pytest --hypothesis-profile fuzz --pyargs harness.suite --server-cmd CMD``.

Examples that fail are kept in ``.hypothesis/`` and replayed first next time.
No deadline: a script's duration is the server's business and its stalls are
judged by the harness's own deadlines.
"""

from hypothesis import HealthCheck, settings

_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("ci", max_examples=60, **_common)
settings.register_profile("dev", max_examples=15, **_common)
settings.register_profile("fuzz", max_examples=5000, **_common)
settings.load_profile("ci")
