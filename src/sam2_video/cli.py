"""The `sam2-video` console script: one small function pair per subcommand, one table.

To add a subcommand, write `_add_<name>_arguments(parser)` and `_run_<name>(args) -> int`
and add a `Subcommand` row to `SUBCOMMANDS`. Library imports happen inside `_run_*` so
that `sam2-video --help` stays fast (no torch import for `score`).

Errors a user can fix (ValueError, OSError such as FileNotFoundError) print
`sam2-video <command>: error: <message>` on stderr and exit 2; argparse usage errors exit 2
as usual.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "sam2-video"
USER_ERROR_EXIT = 2


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---- score -------------------------------------------------------------------------------


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt_dir", type=Path, help="ground truth: GT_DIR/<video>/<frame>.png")
    parser.add_argument("pred_dir", type=Path, help="predictions: PRED_DIR/<video>/<frame>.png")
    parser.add_argument("--json", type=Path, dest="json_out", help="also write the scores here")


def format_score_table(result: dict[str, Any]) -> str:
    """Plain-text table: one row per video, then the mean row."""
    rows = [(name, entry) for name, entry in result["per_video"].items()]
    rows.append(("mean", result["mean"]))
    width = max(len("video"), *(len(name) for name, _ in rows))
    lines = [f"{'video':<{width}}  {'J':>6}  {'F':>6}  {'J&F':>6}  {'Dice':>6}"]
    for name, scores in rows:
        cells = [
            "     -" if scores[key] is None else f"{scores[key]:6.3f}"
            for key in ("j", "f", "jf", "dice")
        ]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _run_score(args: argparse.Namespace) -> int:
    from sam2_video.evaluate.score import score_davis_folders
    from sam2_video.files import write_json_atomic

    result = score_davis_folders(args.gt_dir, args.pred_dir, progress=True)
    print(format_score_table(result))
    if args.json_out is not None:
        write_json_atomic(args.json_out, result)
    mean = result["mean"]
    print(
        f"scored {len(result['per_video'])} video(s): J&F {mean['jf']:.3f} "
        f"(J {mean['j']:.3f}, F {mean['f']:.3f}, Dice {mean['dice']:.3f})"
    )
    return 0


# ---- table -------------------------------------------------------------------------------

SUBCOMMANDS: dict[str, Subcommand] = {
    "score": Subcommand(
        help="J / F / J&F / Dice of DAVIS-format predictions against DAVIS-format ground truth",
        add_arguments=_add_score_arguments,
        run=_run_score,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fine-tune and score SAM2 on video clips: user tools."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, subcommand in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=subcommand.help, description=subcommand.help)
        subcommand.add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sam2-video`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2): return, don't exit
        return exit_.code if isinstance(exit_.code, int) else USER_ERROR_EXIT
    try:
        return SUBCOMMANDS[args.command].run(args)
    except (ValueError, OSError) as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
