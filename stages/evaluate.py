"""evaluate: J, F, J&F, Dice of the base and fine-tuned models on the validation shards.

Writes metrics/eval.json (for `dvc exp show`), metrics/per_clip.json (a DVC plot),
metrics/per_object.json (what `sam2-video compare` pairs), metrics/warnings.json (e.g. the
base model cannot see the objects: diagnose.cannot_see) and the first prompt type's
predictions as DAVIS palette PNGs under data/eval/predictions.
"""

from __future__ import annotations

from pathlib import Path

from sam2_video.data.davis import write_davis_clip
from sam2_video.data.shards import ShardReader
from sam2_video.errors import run_stage
from sam2_video.evaluate import diagnose, run
from sam2_video.files import atomic_path, write_json_atomic
from sam2_video.model import build
from sam2_video.params import load_params

SHARDS, MODEL, RAW = Path("data/shards/val"), Path("data/model"), Path("data/raw")
PREDICTIONS, METRICS = Path("data/eval/predictions"), Path("metrics")


class FirstClips:
    """The first `count` clips of a reader, read when indexed."""

    def __init__(self, reader: ShardReader, count: int):
        self.reader, self.count = reader, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.reader[index]


def main() -> None:
    params = load_params()
    p = params.evaluate
    reader = ShardReader(SHARDS)
    count = len(reader) if p.max_clips == 0 else min(p.max_clips, len(reader))
    clips = FirstClips(reader, count)
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
    base_j = [c["j"] for c in scores["base"][shown]]
    headline["lost_base"] = round(diagnose.lost_share(base_j), 4)
    headline["lost"] = round(diagnose.lost_share([c["j"] for c in scores["finetuned"][shown]]), 4)
    write_json_atomic(METRICS / "eval.json", dict(sorted(headline.items())))
    widths = [c["width"] for c in scores["base"][shown]]
    stored = max(clips[0].frames.shape[1:3])  # the stored frames' longer side
    warning = diagnose.cannot_see(base_j, widths, stored, image_size, params.model)
    write_json_atomic(METRICS / "warnings.json", {"evaluate": [warning] if warning else []})
    if warning:
        print(f"evaluate: warning: {warning}")
    names = reader.names[:count]
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
