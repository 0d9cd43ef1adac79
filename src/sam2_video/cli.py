"""The `sam2-video` console script: one small function pair per subcommand, one table.

To add a subcommand, write `_add_<name>_arguments(parser)` and `_run_<name>(args) -> int`
(its docstring is the command's help) and add a row to `SUBCOMMANDS`. Library imports happen
inside `_run_*` so that `sam2-video --help` stays fast (no torch import for `score`).

Errors a user can fix (ValueError, OSError such as FileNotFoundError) print
`sam2-video <command>: error: <message>` on stderr and exit 2; argparse usage errors exit 2
as usual.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROG = "sam2-video"
USER_ERROR_EXIT = 2


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt_dir", type=Path, help="ground truth: GT_DIR/<video>/<frame>.png")
    parser.add_argument("pred_dir", type=Path, help="predictions: PRED_DIR/<video>/<frame>.png")
    parser.add_argument("--json", type=Path, dest="json_out", help="also write the scores here")
    parser.add_argument(
        "--csv",
        type=Path,
        dest="csv_dir",
        help="also write the DAVIS toolkit's global_results.csv and "
        "per-sequence_results.csv into this folder",
    )


def format_score_table(result: dict[str, Any]) -> str:
    """Plain-text table: one row per video (the mean of its objects), then the mean over all
    objects of all videos."""
    rows = [(name, entry) for name, entry in result["per_video"].items()]
    rows.append(("all objects", result["mean"]))
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
    """J / F / J&F / Dice of DAVIS-format predictions against DAVIS-format ground truth"""
    from sam2_video.evaluate.score import score_davis_folders, write_davis_csv
    from sam2_video.files import write_json_atomic

    result = score_davis_folders(args.gt_dir, args.pred_dir, progress=True)
    for warning in result["warnings"]:
        print(f"{PROG} score: warning: {warning}", file=sys.stderr)
    print(format_score_table(result))
    if args.json_out is not None:
        write_json_atomic(args.json_out, result)
    if args.csv_dir is not None:
        write_davis_csv(result, args.csv_dir)
    m = result["mean"]
    objects = sum(len(entry["per_object"]) for entry in result["per_video"].values())
    print(
        f"scored {len(result['per_video'])} video(s), {objects} object(s), means over objects: "
        f"J&F {m['jf']:.3f} (J {m['j']:.3f}, F {m['f']:.3f}, Dice {m['dice']:.3f}; "
        f"J-Recall {m['j_recall']:.3f}, J-Decay {m['j_decay']:.3f}, "
        f"F-Recall {m['f_recall']:.3f}, F-Decay {m['f_decay']:.3f})"
    )
    return 0


def _add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file",
        type=Path,
        default=Path("params.yaml"),
        help="params file to validate (if present)",
    )


def _run_params(args: argparse.Namespace) -> int:
    """print every parameter with type, default and meaning; validate params.yaml"""
    from sam2_video import params

    values, written = {}, {}
    if args.file.is_file():
        loaded = params.load_params(args.file)  # raises, naming the key, if invalid
        values = _flatten(params.to_dict(loaded))
        written = _flatten(params.to_dict(params.load_raw_params(args.file)))
        print(f"{args.file}: valid (model: {loaded.model}; `auto` values below are its)\n")
    rows = params.describe()
    width = max(len(key) for key, *_ in rows)
    for key, type_name, default, meaning in rows:
        current = f"  = {values[key]!r}" if key in values else ""
        if written.get(key) == params.AUTO:
            current += f" (auto, model {loaded.model})"
        print(
            f"{key:<{width}}  {type_name:<16} default {default}{current}\n{'':<{width}}  {meaning}"
        )
    return 0


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _add_export_davis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shard_dir", type=Path, help="a shard split, e.g. data/shards/val")
    parser.add_argument(
        "out_dir", type=Path, help="DAVIS root to write (JPEGImages/, Annotations/)"
    )


def _run_export_davis(args: argparse.Namespace) -> int:
    """write the clips of a shard split as DAVIS folders (the stored JPEG files as
    they are, other frames as JPEG; palette PNGs)"""
    from sam2_video.data.davis import write_davis_clip
    from sam2_video.data.shards import ShardReader

    with ShardReader(args.shard_dir) as reader:
        for i in range(len(reader)):  # stored JPEGs as they are: SAM2 sees evaluate's pixels
            clip, files = reader[i], reader.stored_files(i)
            write_davis_clip(
                args.out_dir, clip.name, clip.frames, clip.masks, clip.object_ids, files
            )
        print(f"wrote {len(reader)} clips to {args.out_dir}")
    return 0


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="folder with sam2_finetuned.pt and sam2_model.yaml (data/model)",
    )
    parser.add_argument("frames_dir", type=Path, help="folder of JPEG frames, in name order")
    parser.add_argument(
        "--first-mask",
        type=Path,
        required=True,
        help="palette PNG of the first frame (object id = palette index)",
    )
    parser.add_argument("--prompt", choices=("mask", "points", "box"), default="mask")
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU with bf16 autocast when present, else the CPU), cpu, cuda or cuda:N",
    )
    parser.add_argument("out_dir", type=Path, help="output: DAVIS PNG masks and a GIF")


def _run_predict(args: argparse.Namespace) -> int:
    """track the objects of a first-frame mask through a folder of frames"""
    from sam2_video.data.davis import (
        masks_to_index_map,
        read_davis_frames,
        read_palette_png,
        write_palette_png,
    )
    from sam2_video.evaluate.predict import predict_masks
    from sam2_video.evaluate.run import load_model
    from sam2_video.files import atomic_path
    from sam2_video.model.build import pick_device
    from sam2_video.render import comparison_frames, write_gif

    frames = read_davis_frames(args.frames_dir)  # (T, H, W, 3)
    first = read_palette_png(args.first_mask)
    if first.shape != frames.shape[1:3]:
        raise ValueError(
            f"{args.first_mask}: size {first.shape} differs from the frames' {frames.shape[1:3]}"
        )
    ids = [int(i) for i in np.unique(first) if i not in (0, 255)]
    if not ids:
        raise ValueError(f"{args.first_mask}: no object (all pixels are background)")
    device = pick_device(args.device)
    model, image_size = load_model(
        args.model_dir / "sam2_model.yaml", args.model_dir / "sam2_finetuned.pt", device
    )
    prompts = [(0, first == i) for i in ids]
    masks = predict_masks(model, frames, prompts, args.prompt, image_size, device)
    with atomic_path(args.out_dir) as tmp:
        tmp.mkdir()
        for t in range(len(frames)):
            # object k of the prediction keeps its palette index ids[k] from the first mask
            index_map = np.array([0, *ids], np.uint8)[masks_to_index_map(masks[t])]
            write_palette_png(tmp / f"{t:05d}.png", index_map)
        write_gif(comparison_frames(frames, [masks], 1, ("prediction",)), tmp / "prediction.gif", 8)
    print(f"wrote {len(frames)} masks of {len(ids)} objects and prediction.gif to {args.out_dir}")
    return 0


def _add_parity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("data/model"),
        help="folder with sam2_model.yaml (and sam2_finetuned.pt)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        help="checkpoint(s) to compare (default: MODEL_DIR/sam2_finetuned.pt); "
        "repeat the flag for several",
    )
    parser.add_argument(
        "--shards", type=Path, default=Path("data/shards/val"), help="the validation shard split"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest |J difference| allowed per object and clip",
    )
    parser.add_argument(
        "--max-clips", type=int, default=0, help="compare the first N clips only (0: all)"
    )
    parser.add_argument(
        "--first-frame-only",
        action="store_true",
        help="prompt only objects on frame 0 (DAVIS protocol); default: each object on its "
        "first frame, as evaluate.track_later_objects",
    )
    parser.add_argument(
        "--apply-postprocessing",
        action="store_true",
        help="build the predictor as SAM2's notebooks do (hole filling, "
        "dynamic multimask), to see how far that moves the numbers",
    )


def _run_parity(args: argparse.Namespace) -> int:
    """per-object J of our inference vs SAM2VideoPredictor built as SAM2's
    vos_inference.py builds it, on the validation clips (exit 1 above the tolerance)"""
    from sam2_video.data.shards import ShardReader
    from sam2_video.evaluate.parity import compare_clips, vos_inference_predictor
    from sam2_video.evaluate.run import load_model

    config = args.model_dir / "sam2_model.yaml"
    with ShardReader(args.shards) as reader:
        count = len(reader) if args.max_clips <= 0 else min(args.max_clips, len(reader))
        clips = [reader[i] for i in range(count)]
        files = [reader.stored_files(i) for i in range(count)]
    worst = 0.0
    for checkpoint in args.checkpoint or [args.model_dir / "sam2_finetuned.pt"]:
        model, image_size = load_model(config, checkpoint)
        predictor = vos_inference_predictor(config, checkpoint, "cpu", args.apply_postprocessing)
        js = compare_clips(model, predictor, clips, image_size, not args.first_frame_only, files)
        gaps = {name: float(np.abs(j[0] - j[1]).max(initial=0.0)) for name, j in js.items()}
        name = max(gaps, key=gaps.get)
        ours, theirs = (float(np.concatenate([j[k] for j in js.values()]).mean()) for k in (0, 1))
        print(
            f"{checkpoint}: {len(js)} clips, mean J over objects {ours:.4f} (ours) vs "
            f"{theirs:.4f} (SAM2VideoPredictor); largest per-object |difference| "
            f"{gaps[name]:.4f} ({name})"
        )
        worst = max(worst, gaps[name])
    verdict = "within" if worst <= args.tolerance else "above"
    print(f"parity: largest per-object J difference {worst:.4f}, {verdict} {args.tolerance}")
    return 0 if worst <= args.tolerance else 1


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ann_json",
        type=Path,
        help="the COCO JSON (video or static images), or a folder: SA-V layout "
        "(JPEGImages_24fps/<video>/ + <video>_manual.json) or DAVIS layout "
        "(JPEGImages/<video>/ + Annotations/<video>/)",
    )
    parser.add_argument(
        "image_dir",
        type=Path,
        nargs="?",
        help="folder the images' file_name is relative to (COCO JSON only)",
    )
    parser.add_argument(
        "--clip-length", type=int, default=None, help="warn about videos with fewer frames"
    )


def _run_check(args: argparse.Namespace) -> int:
    """lint a dataset (COCO JSON, SA-V or DAVIS folder): every problem as
    file:field: severity: message (exit 1 on errors, 0 with only warnings)"""
    from sam2_video.data.sources import validate

    if args.ann_json.is_dir():
        problems = validate.check_folder_dataset(args.ann_json, clip_length=args.clip_length)
    elif args.image_dir is None:
        raise ValueError(f"{args.ann_json}: a COCO JSON needs its image dir (second argument)")
    else:
        problems = validate.check_coco_dataset(
            args.ann_json, args.image_dir, clip_length=args.clip_length
        )
    for problem in problems:
        print(problem)
    print(f"{args.ann_json}: {validate.summary(problems)}")
    return 1 if any(p.severity == validate.ERROR for p in problems) else 0


def _add_repro_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "repo_dir",
        type=Path,
        nargs="?",
        default=Path("."),
        help="the project, after `dvc repro` (default: .)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        required=True,
        help="largest absolute difference allowed for a metric --tolerances does not name",
    )
    parser.add_argument(
        "--tolerances",
        type=Path,
        help='JSON {"<metrics file>:<key>": tolerance} (bench/tolerances.json: the spread '
        "measured by `python -m bench.numerics`)",
    )
    parser.add_argument("--ref", default="HEAD", help="git ref of the committed run")


def _run_repro_check(args: argparse.Namespace) -> int:
    """after `dvc repro`: data outputs hash-equal to the committed dvc.lock, metrics
    within a tolerance, nothing left to run (exit 1 on problems)"""
    from sam2_video.repro_check import check_reproduction

    per_metric = None if args.tolerances is None else json.loads(args.tolerances.read_text())
    problems = check_reproduction(
        args.repo_dir, args.tolerance, ref=args.ref, per_metric=per_metric
    )
    for problem in problems:
        print(problem)
    verdict = f"{len(problems)} problem(s)" if problems else "reproduces"
    rule = f"metric tolerance {args.tolerance}" + (
        f", per metric from {args.tolerances}" if per_metric else ""
    )
    print(f"repro-check against {args.ref} ({rule}): {verdict}")
    return 1 if problems else 0


def _add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "a",
        help="experiment(s) A: names as `dvc exp show` lists them, git revisions or "
        "'workspace'; comma-separated for a group (e.g. one run per seed)",
    )
    parser.add_argument("b", help="experiment(s) B, as A")
    parser.add_argument("--prompt", default="mask", help="first-frame prompt type (mask)")
    parser.add_argument(
        "--key", default="jf", choices=("jf", "jf_base"), help="score compared (jf: fine-tuned)"
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project (default .)")


def _run_compare(args: argparse.Namespace) -> int:
    """A vs B (experiments, or groups of them such as seeds) by their per-object J&F: the
    paired difference, its 95% interval (bootstrap over videos) and whether it is resolved"""
    from sam2_video.evaluate.experiments import compare

    a, b = args.a.split(","), args.b.split(",")
    diff = compare(args.repo, a, b, args.prompt, args.key)
    print(
        f"{args.key} ({args.prompt} prompt), A - B, mean over {diff.objects} objects of "
        f"{diff.videos} videos: {diff.estimate:+.4f}, 95% interval "
        f"[{diff.low:+.4f}, {diff.high:+.4f}] (A: {len(a)} run(s), B: {len(b)} run(s))"
    )
    print(diff.verdict(args.a, args.b))
    return 0


# name -> (add its arguments to a parser, run it); the run function's docstring is its help
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "check": (_add_check_arguments, _run_check),
    "score": (_add_score_arguments, _run_score),
    "params": (_add_params_arguments, _run_params),
    "export-davis": (_add_export_davis_arguments, _run_export_davis),
    "predict": (_add_predict_arguments, _run_predict),
    "parity": (_add_parity_arguments, _run_parity),
    "compare": (_add_compare_arguments, _run_compare),
    "repro-check": (_add_repro_check_arguments, _run_repro_check),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fine-tune and score SAM2 on video clips: user tools."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add_arguments, run) in SUBCOMMANDS.items():
        text = " ".join((run.__doc__ or "").split()).replace("%", "%%")  # argparse %-formats it
        add_arguments(subparsers.add_parser(name, help=text, description=text))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sam2-video`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2): return, don't exit
        return exit_.code if isinstance(exit_.code, int) else USER_ERROR_EXIT
    try:
        return SUBCOMMANDS[args.command][1](args)
    except (ValueError, OSError) as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
