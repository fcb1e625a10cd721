"""``shiftcheck kl``: the KL preflight of a pair from the command line (the same table as a run)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shiftcheck.cli_common import CHECKPOINT_HELP, add_command, plugin_help, plugin_value, say

DESCRIPTION = """\
Mean per-token KL(A || B) on A's own greedy responses, teacher-forced through both models, per
prompt source and pooled: the preflight every pytest run starts with (A = --tuned, B = --base).
One model is resident at a time: A's pass keeps each response token's top-64 next-token
distribution plus a tail bucket in the result cache, B's pass reads it. The approximation never
overstates the KL (docs/RELEASE.md). Results are cached, and shared with pytest runs.

A KL below 1e-3 nats/token between two different checkpoints means they behave identically: the
shift findings cannot hold for such a pair. Exit status 3 then.

examples:
  shiftcheck kl world:good world:base
  shiftcheck kl ./tuned ./base --max-prompts 16
  shiftcheck kl SOURCE_DIR model-q8_0.gguf        # a release artifact against its source
"""


def _kl(args: argparse.Namespace) -> int:
    from shiftcheck.cli_common import user_errors  # noqa: F401 (the command's errors are the plugin's)
    from shiftcheck.fixtures.models import DEFAULT_PROMPTS
    from shiftcheck.probes.cache import open_cache
    from shiftcheck.probes.importance.probe import ImportanceProbe
    from shiftcheck.probes.importance import ImportanceConfig
    from shiftcheck.probes.models.loading import LoadOptions
    from shiftcheck.probes.prompts import load_prompts, sample_per_source
    from shiftcheck.probes.release.kl import IDENTICAL_KL, table
    from shiftcheck.probes.release.preflight import kl_of_pair, kl_probe
    from shiftcheck.probes.runner import PairRunner, resolve_ref
    from shiftcheck.probes.world.build import world_prompts_path
    from shiftcheck.probes.world.spec import parse_world_spec

    cache = open_cache()
    start = time.perf_counter()
    tuned = resolve_ref("tuned", args.a, cache.local, progress=say, gguf_file=args.a_gguf_file)
    base = resolve_ref("base", args.b, cache.local, progress=say, gguf_file=args.b_gguf_file)
    if tuned.fingerprint == base.fingerprint:
        print(f"{args.a} and {args.b} are the same checkpoint (equal fingerprints): KL = 0 by construction")
        return 3
    if args.prompts is not None:
        path = Path(args.prompts)
    else:
        world = parse_world_spec(args.a)
        path = world_prompts_path(cache.local, world[1]) if world is not None else DEFAULT_PROMPTS
    prompts = load_prompts(path)
    if args.max_prompts:
        prompts = sample_per_source(prompts, args.max_prompts)
    options = LoadOptions(dtype=args.dtype, device=args.device)
    runner = PairRunner(base, tuned, options, cache)
    config = ImportanceConfig(max_new_tokens=args.max_new_tokens, chat_template=args.chat_template,
                              dtype={"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(args.dtype, args.dtype))
    # finding 1's probe as a run builds it: its cached tuned responses are reused when present
    responses_from = ImportanceProbe(tuple(prompts), config)
    probe = kl_probe(runner, prompts, config.max_new_tokens, config.chat_template, config.dtype, responses_from)
    result = kl_of_pair(runner, probe)
    print(f"KL({args.a} || {args.b}) on {args.a}'s greedy responses, {len(prompts)} prompts from {path}, "
          f"top-{result.k} + tail")
    for line in table(result):
        print(line)
    took = time.perf_counter() - start
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in runner.stages.items()) + f"; total {took:.1f}")
    if result.identical():
        print(f"base and tuned behave identically: mean per-token KL {result.pooled.mean_kl:.2e} < {IDENTICAL_KL:g} "
              "nats/token although the files differ")
        return 3
    return 0


def add_kl(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "kl", "KL preflight: mean per-token KL(A || B) on A's greedy responses", DESCRIPTION)
    p.add_argument("a", metavar="A", type=plugin_value("tuned"),
                   help="The reference (the tuned checkpoint, or a release's source). " + CHECKPOINT_HELP)
    p.add_argument("b", metavar="B", type=plugin_value("base"),
                   help="The other checkpoint (the base, or the release artifact). Same forms as A.")
    p.add_argument("--a-gguf-file", default=None, metavar="NAME", help="GGUF file name inside A's directory.")
    p.add_argument("--b-gguf-file", default=None, metavar="NAME", help="GGUF file name inside B's directory.")
    p.add_argument("--prompts", default=None, type=plugin_value("prompts"), metavar="JSONL",
                   help=plugin_help("prompts"))
    p.add_argument("--max-prompts", default=None, type=plugin_value("max_prompts"), metavar="N",
                   help=plugin_help("max_prompts"))
    p.add_argument("--max-new-tokens", default=300, type=plugin_value("max_new_tokens"), metavar="N",
                   help=plugin_help("max_new_tokens"))
    p.add_argument("--chat-template", action="store_true", help=plugin_help("chat_template"))
    p.add_argument("--device", default="auto", type=plugin_value("device"), help=plugin_help("device"))
    p.add_argument("--dtype", default="float32", type=plugin_value("dtype"), metavar="DTYPE",
                   help=plugin_help("dtype"))
    p.set_defaults(func=_kl)
