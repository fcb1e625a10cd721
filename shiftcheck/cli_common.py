"""What the model commands of the ``shiftcheck`` console script share with the pytest plugin.

A checkpoint is named, checked and loaded exactly as ``--base`` is: the argument goes through the
plugin's own value parser (``fixtures.options.parse_value``), ``probes.runner.resolve_ref`` turns
``world:NAME[@seed=N]`` into the shipped (or built) world and fingerprints it, and
``probes.models.loading.load_checkpoint`` loads it. Options that mean the same as a plugin option
carry its name and its help text, so one word means one thing across ``pytest`` and ``shiftcheck``.

Nothing here imports torch at module level: building the parser (``--help``) must stay instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shiftcheck.probes.world.spec import MODEL_NAMES

if TYPE_CHECKING:
    from shiftcheck.probes.models.loading import Checkpoint, LoadOptions
    from shiftcheck.probes.runner import CheckpointRef

FORMATTER = argparse.RawDescriptionHelpFormatter

CHECKPOINT_HELP = (
    "The checkpoint, in any form --base accepts: a local directory, a .gguf file, a hub id, or "
    f"world:NAME[@seed=N] for the embedded world (NAME one of {', '.join(MODEL_NAMES)})."
)


class CliUsageError(ValueError):
    """A command-line value that only the loaded model can refute (a layer past the last one)."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_command(sub: argparse._SubParsersAction, name: str, summary: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` starts with a plain-text description (``summary`` if none)."""
    return sub.add_parser(name, help=summary, description=description or summary[:1].upper() + summary[1:] + ".",
                          formatter_class=FORMATTER)


# ---------------------------------------------------------------------------------------------
# the plugin's options: one help text and one value parser per concept


def plugin_help(name: str) -> str:
    """The pytest plugin's help for option ``name`` (``%`` escaped for argparse)."""
    from shiftcheck.fixtures.options import OPTIONS

    (option,) = [o for o in OPTIONS if o.name == name]
    return option.help.replace("%", "%%")


def plugin_value(name: str):
    """An argparse ``type`` that parses a value as the plugin's option ``name`` does (same checks,
    same message; relative paths resolve against the current directory)."""

    def parse(text: str) -> Any:
        import pytest

        from shiftcheck.fixtures.options import OPTIONS, parse_value

        (option,) = [o for o in OPTIONS if o.name == name]
        try:
            return parse_value(option, text, False, Path.cwd())
        except pytest.UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its fallback message
    return parse


class _Deprecated(argparse.Action):
    """An old spelling kept working, hidden from ``--help``, with a note naming the new one."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        say(f"shiftcheck: {option_string} is deprecated, use {self.new}")
        setattr(namespace, self.dest, values)


def add_alias(parser: Any, old: str, new: str, dest: str, type: Any = str) -> None:
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, type=type, default=argparse.SUPPRESS)


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT and the loading options, named as the plugin names them for --base."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=plugin_value("base"), help=CHECKPOINT_HELP)
    g = parser.add_argument_group("loading CHECKPOINT (as the pytest plugin loads --base)")
    g.add_argument("--gguf-file", default=None, metavar="NAME",
                   help="GGUF file name inside the CHECKPOINT directory or hub repository (or give the .gguf "
                        "path as CHECKPOINT). The plugin's --base-gguf-file.")
    g.add_argument("--revision", default=None,
                   help="Hub revision (branch, tag or commit) of CHECKPOINT. The plugin's --base-revision.")
    g.add_argument("--adapter", default=None, metavar="DIR", type=plugin_value("tuned_adapter"),
                   help=plugin_help("tuned_adapter").replace("--tuned", "CHECKPOINT"))
    g.add_argument("--trust-remote-code", action="store_true", help=plugin_help("trust_remote_code"))
    g.add_argument("--device", default="auto", type=plugin_value("device"), help=plugin_help("device"))
    g.add_argument("--dtype", default="float32", type=plugin_value("dtype"), metavar="DTYPE",
                   help=plugin_help("dtype"))
    g.add_argument("--device-map", default=None, metavar="MAP", help=plugin_help("device_map"))
    g.add_argument("--low-cpu-mem-usage", action="store_true", help=plugin_help("low_cpu_mem_usage"))


def add_words(parser: argparse.ArgumentParser, glove_help: str | None = None) -> None:
    """--candidate-words and --glove, as the plugin names them (old --words kept hidden)."""
    parser.add_argument("--candidate-words", default=None, metavar="TSV", type=plugin_value("candidate_words"),
                        help=plugin_help("candidate_words"))
    add_alias(parser, "--words", "--candidate-words", "candidate_words", plugin_value("candidate_words"))
    parser.add_argument("--glove", default=None, metavar="FILE", type=plugin_value("glove"),
                        help=glove_help or plugin_help("glove"))


def add_columns(parser: argparse.ArgumentParser) -> None:
    """The Model and Size columns of the authors' TSV (old --name kept hidden)."""
    parser.add_argument("--model-name", default=None, metavar="NAME",
                        help="Model column. Default: the checkpoint's folder, .gguf file or world name.")
    add_alias(parser, "--name", "--model-name", "model_name")
    parser.add_argument("--size", default="", help="Size column, e.g. 135M or 7B. Default: empty.")


def parse_layers(text: str) -> list[int]:
    """``"0,14,29"`` or ``"0-3,29"`` -> layer indices (an argparse ``type``)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if part.strip():
                a, _, b = part.partition("-")
                out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layers like 0,14,29 or 0-3,29, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"no layer in {text!r}")
    return out


def add_layers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", default=None, type=parse_layers,
                        help="0-based layers, comma-separated, ranges allowed: 0,14,29 or 0-3,29. Default: all.")


def check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise CliUsageError(f"--layers {bad} outside 0..{n_layers - 1} (the model has {n_layers} layers)")
    return layers


# ---------------------------------------------------------------------------------------------
# resolving and loading


def resolve(args: argparse.Namespace) -> CheckpointRef:
    """CHECKPOINT resolved and fingerprinted by the plugin's own function (world:NAME included)."""
    from shiftcheck.probes.cache import open_cache
    from shiftcheck.probes.runner import resolve_ref

    return resolve_ref("checkpoint", args.checkpoint, open_cache().local, args.revision, args.adapter,
                       progress=say, gguf_file=args.gguf_file)


def load_options(args: argparse.Namespace, ref: CheckpointRef) -> LoadOptions:
    from shiftcheck.probes.models.loading import LoadOptions

    return LoadOptions(revision=ref.revision, dtype=args.dtype, device=args.device, adapter=ref.adapter,
                       trust_remote_code=args.trust_remote_code, gguf_file=ref.gguf_file,
                       device_map=args.device_map, low_cpu_mem_usage=args.low_cpu_mem_usage)


def load(args: argparse.Namespace) -> tuple[CheckpointRef, Checkpoint]:
    from shiftcheck.probes.models.loading import load_checkpoint
    from shiftcheck.probes.runner import quiet_loading

    ref = resolve(args)
    say(f"loading {ref.spec} ({ref.fingerprint[:40]})")
    quiet_loading()
    return ref, load_checkpoint(ref.location, load_options(args, ref))


def model_label(ref: CheckpointRef) -> str:
    """The default Model column: ``world-good``, a .gguf file's stem, a folder's or hub repo's name."""
    if ref.spec.startswith("world:"):
        return "world-" + ref.spec[len("world:"):].replace("@seed=", "-seed")
    name = ref.gguf_file or ref.spec.rstrip("/\\")
    path = Path(name)
    return path.stem if path.suffix == ".gguf" else path.name


def user_errors() -> tuple[type[BaseException], ...]:
    """Input errors a command reports in one line (exit 2); anything else keeps its traceback."""
    import pytest

    from shiftcheck.fixtures.models import user_errors as plugin_errors
    from shiftcheck.probes.attention.io import PairsFormatError
    from shiftcheck.probes.ffn import FfnError
    from shiftcheck.probes.ffn.annotators import AnnotatorError
    from shiftcheck.probes.words import WordResourceError

    return (*plugin_errors(), CliUsageError, pytest.UsageError, WordResourceError, FfnError, AnnotatorError,
            PairsFormatError)
