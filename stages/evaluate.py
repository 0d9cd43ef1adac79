"""evaluate: J, F, J&F, Dice of the base and fine-tuned models on the validation shards.

Writes metrics/eval.json (for `dvc exp show`), metrics/per_clip.json (a DVC plot) and
the first prompt type's predictions as DAVIS palette PNGs under data/eval/predictions.
"""

from __future__ import annotations

from pathlib import Path

from sam2_video.data.davis import write_davis_clip
from sam2_video.data.shards import ShardReader
from sam2_video.errors import run_stage
from sam2_video.evaluate import run
from sam2_video.files import atomic_path, write_json_atomic
from sam2_video.model import build
from sam2_video.params import load_params

SHARDS, MODEL, RAW = Path("data/shards/val"), Path("data/model"), Path("data/raw")
PREDICTIONS, METRICS = Path("data/eval/predictions"), Path("metrics")


def main() -> None:
    p = load_params().evaluate
    reader = ShardReader(SHARDS)
    count = len(reader) if p.max_clips == 0 else min(p.max_clips, len(reader))
    clips = [reader[i] for i in range(count)]
    config, device = MODEL / "sam2_model.yaml", build.pick_device(p.device)
    base, image_size = run.load_model(config, RAW / "base_checkpoint.pt", device)
    tuned, _ = run.load_model(config, MODEL / "sam2_finetuned.pt", device)
    shown = p.prompts[0]
    with atomic_path(PREDICTIONS) as tmp:

        def save(model, prompt, clip, masks):
            if prompt == shown:
                write_davis_clip(tmp / model, clip.name, clip.frames, masks, clip.object_ids)

        scores = run.score_models(
            {"base": base, "finetuned": tuned}, clips, p, image_size, device, save
        )
    headline = run.headline_metrics(scores, p.prompts)
    write_json_atomic(METRICS / "eval.json", headline)
    names = [c.name for c in clips]
    write_json_atomic(METRICS / "per_clip.json", run.per_clip_rows(scores, names, shown))
    write_json_atomic(METRICS / "per_object.json", run.per_object_rows(scores, names))
    jf, base, gain = headline["jf"], headline["jf_base"], headline["jf_gain"]
    lo, hi = headline[f"jf_gain_{shown}_lo"], headline[f"jf_gain_{shown}_hi"]
    print(
        f"evaluate: {len(clips)} clips on {device}, means over objects: jf {jf:.3f} "
        f"(base {base:.3f}, gain {gain:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}])"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
