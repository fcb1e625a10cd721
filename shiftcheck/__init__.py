"""shiftcheck: a pytest suite that vets instruction-tuned LLM checkpoints against their base model.

One installed package; its subpackages live in the repository's top-level folders:
``shiftcheck.probes`` (``probes/``, pure computation) and ``shiftcheck.fixtures`` (``fixtures/``,
the pytest plugin). The console script is ``shiftcheck`` (``shiftcheck.cli``).
"""

__version__ = "0.2.0"
