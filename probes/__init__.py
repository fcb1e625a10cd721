"""shiftcheck probes: pure computation for the three probes of Wu et al. 2023 (arXiv 2310.00492).

No pytest imports live here; the pytest plugin is in ``fixtures``.
"""

__version__ = "0.1.0"
