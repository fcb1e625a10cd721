"""Shared set-up of the project's own tests.

pytester's in-process runs snapshot ``sys.modules`` and restore it afterwards. torch registers
native operator libraries once per process, so a torch (or transformers model module) first
imported inside such a run and dropped by the restore would be imported a second time and crash.
The plugin itself imports neither, so they are imported here, once, for the whole test session.
"""

import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: F401

import shiftcheck.probes.importance  # noqa: F401
import shiftcheck.probes.runner  # noqa: F401
