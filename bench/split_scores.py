"""Does fine-tuning fit its own training videos? J&F of the last step on every split (issue 28).

`python -m bench.split_scores [--train N] [--val N]`, in a workspace after `dvc repro`
(or `dvc exp run`): the base (data/raw/base_checkpoint.pt) and the weights of the train
stage's last checkpoint (data/checkpoints/resume.pt: the last step, whichever step the
stage shipped) scored with the mask prompt, as evaluate scores it, on the first clips of
the train, tune and val splits. Prints per split the clips, both J&F (means over objects)
and the gain.

Reading it: a gain on train but not on tune/val is overfitting; no gain even on train is
a recipe that does not move J&F at all on this base; a tune split that disagrees with val
picks the step by noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sam2_video.data.shards import ShardReader
from sam2_video.evaluate import metrics, run
from sam2_video.params import EvaluateParams
from stages.evaluate import FirstClips  # the evaluate stage's first-N view of a split

CONFIG, BASE = Path("data/model/sam2_model.yaml"), Path("data/raw/base_checkpoint.pt")
LAST = Path("data/checkpoints/resume.pt")


def last_step_model(base_checkpoint: Path, resume: Path):
    """The base with the trainable weights of the train stage's resumable state."""
    model, image_size = run.load_model(CONFIG, base_checkpoint)
    trained = torch.load(resume, map_location="cpu", weights_only=True)["trainable"]
    missing, unexpected = model.load_state_dict(trained, strict=False)
    if unexpected:
        raise ValueError(f"{resume}: weights the model lacks: {unexpected[:3]}")
    return model, image_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=48, help="train clips scored")
    parser.add_argument("--val", type=int, default=96, help="val clips scored")
    args = parser.parse_args()
    base, image_size = run.load_model(CONFIG, BASE)
    last, _ = last_step_model(BASE, LAST)
    p = EvaluateParams(prompts=("mask",))
    print("split  clips  jf_base  jf_last  gain")
    for split, count in (("train", args.train), ("tune", 10**6), ("val", args.val)):
        with ShardReader(Path("data/shards") / split) as reader:
            clips = FirstClips(reader, min(count, len(reader)))
            scores = run.score_models({"base": base, "last": last}, clips, p, image_size)
        jf = {name: metrics.summarize(s["mask"])["jf"] for name, s in scores.items()}
        gain = jf["last"] - jf["base"]
        print(f"{split:<6} {len(clips):>5}  {jf['base']:.3f}    {jf['last']:.3f}    {gain:+.3f}")


if __name__ == "__main__":
    main()
