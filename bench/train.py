"""Training step time: our rollout + losses against SAM2's own trainer model, same run.

`python -m bench.train` (what `make bench` runs) times one training step (forward over a
clip, loss, backward, AdamW step over memory_attention + memory_encoder) of
  ours:          sam2_video.model.rollout.track + losses.clip_losses on a SAM2Base, with
                 the frozen image encoder's output read from fit.py's feature cache (what
                 every visit of a clip after its first does; the first step fills it),
  ours_uncached: the same, encoding the frames at every step (a clip's first visit),
  theirs:        training.model.sam2.SAM2Train + training.loss_fns.MultiStepMultiMasksAndIous,
with the same model config and weights (the shipped tiny base, or a seeded random init),
the same seeded clip tensors, prompt kind, number of correction clicks and trainable set.
Timing: all variants in one subprocess, steps interleaved, so a change in machine load
hits them alike. Memory: one subprocess per variant (RSS high-water mark on CPU,
torch.cuda.max_memory_allocated on GPU). The first step's loss terms of ours and theirs are
printed side by side as a check that both do the same work: mask, dice, IoU (both
supervise every multimask output's IoU, SAM2.1's supervise_all_iou) and object-score terms
agree on mask prompts (on point prompts each side samples its own click locations).

Flags: --large adds Hiera-T (256 px) on CPU; --no-gpu skips the CUDA scenarios that run
by default when CUDA is available; --gpu-only runs just those (a GPU machine lent for a few
minutes); --results PATH is the Markdown file whose "## Training" section is updated.
The CPU and GPU tables are separate blocks there: a run rewrites only the block(s) it
measured, so a CPU-only run keeps the GPU numbers taken elsewhere (each block has its own
command, date and machine line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from bench.markdown import replace_section
from sam2_video.files import atomic_path
from sam2_video.model import build, feature_cache, losses, rollout
from sam2_video.model.recipes import SAM21_MOSE_LOSSES, TINY_PROMPTS

TRAINABLE = ("memory_attention", "memory_encoder")
GOAL_RATIO = 0.8
THEIR_TARGET = "training.model.sam2.SAM2Train"
VARIANTS = ("ours", "ours_uncached", "theirs")  # ours = fit.py's default (feature cache on)
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Training"
BEGIN, END = "<!-- bench.train:begin -->", "<!-- bench.train:end -->"
GPU_BEGIN, GPU_END = "<!-- bench.train.gpu:begin -->", "<!-- bench.train.gpu:end -->"
GPU_NOT_MEASURED = ["GPU: not measured yet (`python -m bench.train --gpu-only` on a CUDA machine)."]
LOSS_WEIGHTS = SAM21_MOSE_LOSSES  # theirs: SAM2's MultiStepMultiMasksAndIous, 20/1/1/1
MEMORY_STEPS = 3  # the first step allocates optimizer state; peaks are reached by then


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str  # build.MODEL_NAMES
    image_size: int
    frames: int
    clips: int
    objects_per_clip: int
    kind: str  # "mask" or "points"
    clicks: int  # correction clicks on frame 0 (points only)
    device: str = "cpu"
    amp: bool = False  # bf16 autocast (GPU)
    warmup: int = 3
    steps: int = 10


def _pair(name: str, model: str, size: int, frames: int, clips: int, **kw) -> list[Scenario]:
    """The two prompt regimes of one model setting: mask on frame 0; point + 7 clicks."""
    base = Scenario(f"{name}-mask", model, size, frames, clips, 2, "mask", 0, **kw)
    return [base, replace(base, name=f"{name}-points+7", kind="points", clicks=7)]


TINY = _pair("tiny-128px", "tiny", 128, 4, 2, steps=20)  # ~0.1 s steps: more for a stable median
LARGE = _pair("hiera_t-256px", "sam2.1_hiera_tiny", 256, 5, 1)
GPU = [
    sc
    for model, short in (("sam2.1_hiera_tiny", "hiera_t"), ("sam2.1_hiera_base_plus", "hiera_b+"))
    for size in (512, 1024)
    for sc in _pair(f"gpu-{short}-{size}px", model, size, 5, 1, device="cuda", amp=True)
]
SCENARIOS = {sc.name: sc for sc in TINY + LARGE + GPU}


# -- inputs --------------------------------------------------------------------------------


@dataclass
class Inputs:
    images: torch.Tensor  # (B, T, 3, S, S) float
    gt: torch.Tensor  # (T, N, S, S) bool
    obj_to_clip: torch.Tensor  # (N,) long


def ellipse_masks(sc: Scenario, rng: np.random.Generator) -> np.ndarray:
    """(T, N, S, S) bool: one ellipse per object drifting a few pixels per frame."""
    s, n = sc.image_size, sc.clips * sc.objects_per_clip
    yy, xx = np.mgrid[0:s, 0:s]
    center = rng.uniform(0.3 * s, 0.7 * s, size=(n, 2))
    radii = rng.uniform(s / 10, s / 5, size=(n, 2))
    velocity = rng.uniform(-0.03 * s, 0.03 * s, size=(n, 2))
    masks = np.zeros((sc.frames, n, s, s), dtype=bool)
    for t in range(sc.frames):
        cx, cy = (center + t * velocity).T
        dx = (xx[None] - cx[:, None, None]) / radii[:, 0, None, None]
        dy = (yy[None] - cy[:, None, None]) / radii[:, 1, None, None]
        masks[t] = dx**2 + dy**2 <= 1.0
    return masks


def make_inputs(sc: Scenario, seed: int) -> Inputs:
    rng = np.random.default_rng(seed)
    s = sc.image_size
    images = rng.standard_normal((sc.clips, sc.frames, 3, s, s), dtype=np.float32)
    gt = ellipse_masks(sc, rng)
    obj_to_clip = torch.arange(sc.clips).repeat_interleave(sc.objects_per_clip)
    dev = torch.device(sc.device)  # on the device, as fit.py's Batch.to(device) leaves them
    tensors = (torch.from_numpy(images), torch.from_numpy(gt), obj_to_clip)
    return Inputs(*(x.to(dev) for x in tensors))


def their_batch(inp: Inputs):
    """The same tensors as SAM2's collate_fn would give them (BatchedVideoDatapoint)."""
    from training.utils.data_utils import BatchedVideoDatapoint, BatchedVideoMetaData

    t, n = inp.gt.shape[:2]
    dev = inp.gt.device
    frame_idx = torch.arange(t, device=dev)[:, None].expand(t, n)
    clip_idx = inp.obj_to_clip[None].expand(t, n)
    obj_to_frame_idx = torch.stack([frame_idx, clip_idx], -1).int()  # (T, N, 2)
    obj_idx = torch.arange(n, device=dev)[None].expand(t, n)
    ids = torch.stack([clip_idx, obj_idx, frame_idx], -1).long()  # (T, N, 3)
    size = torch.tensor(inp.gt.shape[-2:], device=dev).expand(t, n, 2).long()
    return BatchedVideoDatapoint(
        img_batch=inp.images.transpose(0, 1).contiguous(),  # (T, B, 3, S, S)
        obj_to_frame_idx=obj_to_frame_idx,
        masks=inp.gt,
        metadata=BatchedVideoMetaData(unique_objects_identifier=ids, frame_orig_size=size),
        dict_key="bench",
        batch_size=[t],
    )


# -- the two training steps ----------------------------------------------------------------


def model_config(sc: Scenario):
    return build.load_model_config(sc.model, image_size=sc.image_size)


def their_model_kwargs(sc: Scenario) -> dict:
    """SAM2Train settings that make it do exactly the work of our plan for `sc`."""
    points = sc.kind == "points"
    return {
        "prob_to_use_pt_input_for_train": 1.0 if points else 0.0,
        "prob_to_use_box_input_for_train": 0.0,
        "num_frames_to_correct_for_train": 1,
        "rand_frames_to_correct_for_train": False,
        "num_init_cond_frames_for_train": 1,
        "rand_init_cond_frames_for_train": False,
        "add_all_frames_to_correct_as_cond": False,
        "num_correction_pt_per_frame": sc.clicks,
        "prob_to_sample_from_gt_for_train": 0.0,
        "use_act_ckpt_iterative_pt_sampling": False,
        "freeze_image_encoder": True,
    }


def build_variant(variant: str, sc: Scenario) -> torch.nn.Module:
    """Same config, same weights (seeded init, or the shipped tiny base), same trainable set."""
    cfg = model_config(sc)
    target = None
    if variant == "theirs":
        cfg.model.update(their_model_kwargs(sc))
        target = THEIR_TARGET
    torch.manual_seed(0)  # identical random init for both variants
    model = build.build_model(cfg, target=target)
    if sc.model == "tiny" and build.tiny_base_weights_path().is_file():
        build.load_checkpoint(model, build.tiny_base_weights_path())
    build.set_trainable(model, TRAINABLE)
    return model.to(sc.device).train()


def our_step(model, sc: Scenario, inp: Inputs, cached: bool) -> Callable[[], dict]:
    """fit.py's step; `cached`: the frozen encoder's output comes from the feature cache
    (filled by the first, warm-up step), as on every visit of a clip after its first."""
    cfg = replace(TINY_PROMPTS, num_correction_clicks=sc.clicks)
    plan = rollout.Plan(cond_frames=(0,), kind=sc.kind, correction_frames=(0,) if sc.clicks else ())
    gen = torch.Generator().manual_seed(0)
    cache = feature_cache.EncoderCache(max_bytes=2**34) if cached else None
    frames_per_clip = inp.images.shape[1]
    keys = [tuple(f"clip{i}/{t}" for t in range(frames_per_clip)) for i in range(sc.clips)]

    def step() -> dict[str, torch.Tensor]:
        encoded = cache.encode(model, inp.images, keys) if cache is not None else None
        frames = rollout.track(model, inp.images, inp.gt, inp.obj_to_clip, plan, cfg, gen, encoded)
        parts = losses.clip_losses(frames, inp.gt, LOSS_WEIGHTS)
        return {
            "total": parts["total"],
            "mask": parts["mask"],
            "dice": parts["dice"],
            "iou": parts["iou"],
            "object_score": parts["object_score"],
        }

    return step


def their_step(model, sc: Scenario, inp: Inputs) -> Callable[[], dict[str, torch.Tensor]]:
    from training.loss_fns import MultiStepMultiMasksAndIous
    from training.trainer import CORE_LOSS_KEY

    weights = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    loss_fn = MultiStepMultiMasksAndIous(
        weight_dict=weights, supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True
    )
    batch = their_batch(inp)

    def step() -> dict[str, torch.Tensor]:
        parts = loss_fn(model(batch), batch.masks)
        return {
            "total": parts[CORE_LOSS_KEY],
            "mask": parts["loss_mask"],
            "dice": parts["loss_dice"],
            "iou": parts["loss_iou"],
            "object_score": parts["loss_class"],
        }

    return step


# -- one variant, in its own process -------------------------------------------------------


def current_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Trainer:
    """One variant's training step (forward, loss, backward, AdamW) on one device."""

    def __init__(self, variant: str, sc: Scenario, inp: Inputs):
        self.model = build_variant(variant, sc)
        if variant == "theirs":
            self.step = their_step(self.model, sc, inp)
        else:
            self.step = our_step(self.model, sc, inp, cached=variant == "ours")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # each side's own optimizer: fit.py's fused AdamW, SAM2's trainer's default one
        self.opt = torch.optim.AdamW(
            self.params, lr=1e-4, weight_decay=0.01, fused=variant != "theirs"
        )
        self.sc = sc

    def __call__(self) -> tuple[float, dict[str, float]]:
        """Seconds of one step (device-synchronized) and its loss parts."""
        sync = torch.cuda.synchronize if self.sc.device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.sc.device, dtype=torch.bfloat16, enabled=self.sc.amp):
            parts = self.step()
        parts["total"].backward()
        self.opt.step()
        sync()
        return time.perf_counter() - start, {k: float(v.detach()) for k, v in parts.items()}


def run_timing(sc: Scenario, seed: int) -> dict:
    """All variants in one process, steps interleaved so load changes hit them alike."""
    torch.backends.cudnn.benchmark = sc.device == "cuda"
    inp = make_inputs(sc, seed)
    trainers = {v: Trainer(v, sc, inp) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in trainers}
    for i in range(sc.warmup + sc.steps):
        for variant, trainer in trainers.items():
            seconds, _ = trainer()
            if i >= sc.warmup:
                times[variant].append(seconds)
    return {"times": times, "threads": torch.get_num_threads()}


def run_memory(variant: str, sc: Scenario, seed: int) -> dict:
    """Peak memory of one variant alone in this process, and its first-step losses."""
    torch.backends.cudnn.benchmark = sc.device == "cuda"
    import training.loss_fns  # noqa: F401  -- both variants pay the same import RSS
    import training.utils.data_utils  # noqa: F401

    trainer = Trainer(variant, sc, make_inputs(sc, seed))
    if sc.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_bytes()
    torch.manual_seed(1)  # same dropout draws for both variants on the first step
    first = [trainer()[1] for _ in range(MEMORY_STEPS)][0]
    mib = 1024 * 1024
    out = {"first_loss": first, "trainable": sum(p.numel() for p in trainer.params)}
    if sc.device == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated() / mib
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        out["peak_mib"] = peak / mib
        out["delta_mib"] = (peak - rss_before) / mib
    return out


def run_profile(sc: Scenario, seed: int, steps: int = 3) -> None:
    """torch.profiler over `steps` of our cached step after warm-up: where a step's time
    goes (on GPU a step can be bound by operator launches rather than by the kernels)."""
    from torch.profiler import ProfilerActivity, profile

    trainer = Trainer("ours", sc, make_inputs(sc, seed))
    for _ in range(sc.warmup):
        trainer()
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (sc.device == "cuda")
    with profile(activities=activities) as prof:
        seconds = [trainer()[0] for _ in range(steps)]
    events = prof.key_averages()
    if sc.device == "cuda":  # where the GPU's time goes, then the CPU's (launches)
        print(events.table(sort_by="self_cuda_time_total", row_limit=20), flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=20), flush=True)
    kernels = sum(e.count for e in events if e.device_type.name == "CUDA")
    print(
        f"{sc.name}: step ms {[round(1000 * s, 1) for s in seconds]}, operator calls per "
        f"step {sum(e.count for e in events if e.device_type.name == 'CPU') // steps}, "
        f"kernels per step {kernels // steps}",
        flush=True,
    )


# -- the driver ----------------------------------------------------------------------------


def _child_command(child: str, sc: Scenario, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.train",
        "--child",
        child,
        "--scenario",
        sc.name,
        "--seed",
        str(seed),
    ]


def spawn(child: str, sc: Scenario, seed: int) -> dict:
    """Run `child` ("time", "ours" or "theirs") for `sc` in a fresh interpreter."""
    repo = Path(__file__).resolve().parent.parent  # so that `-m bench.train` imports
    done = subprocess.run(
        _child_command(child, sc, seed), cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{child} on {sc.name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Row:
    scenario: Scenario
    ours: dict
    ours_uncached: dict
    theirs: dict

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours["times"]) / statistics.median(self.theirs["times"])

    @property
    def uncached_ratio(self) -> float:
        theirs = statistics.median(self.theirs["times"])
        return statistics.median(self.ours_uncached["times"]) / theirs


def loss_check(row: Row) -> str:
    """First-step loss terms of ours and theirs side by side."""
    a, b = row.ours["first_loss"], row.theirs["first_loss"]
    return " ".join(f"{k} {a[k]:.4g}/{b[k]:.4g}" for k in ("mask", "dice", "object_score", "iou"))


def table(rows: list[Row], gpu: bool) -> list[str]:
    mem = "peak GPU alloc MiB" if gpu else "peak RSS MiB (train delta)"
    lines = [
        "| scenario | ours ms (cached encoder) | ours ms (encoder every step) | theirs ms | "
        f"ours/theirs | uncached/theirs | {mem} ours | theirs | first-step loss ours/theirs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        med = [1000 * statistics.median(v["times"]) for v in (r.ours, r.ours_uncached, r.theirs)]
        speed = [f"{m:.1f}" for m in med]
        if gpu:
            clips = r.scenario.clips
            speed = [f"{m:.1f} ({1000 * clips / m:.2f} clips/s)" for m in med]
        mems = [
            f"{v['peak_mib']:.0f}" + (f" ({v['delta_mib']:+.0f})" if "delta_mib" in v else "")
            for v in (r.ours, r.theirs)
        ]
        flag = "" if r.ratio <= GOAL_RATIO else " (goal missed)"
        cells = [
            r.scenario.name,
            *speed,
            f"{r.ratio:.2f}{flag}",
            f"{r.uncached_ratio:.2f}",
            *mems,
            loss_check(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def describe(sc: Scenario) -> str:
    n = sc.clips * sc.objects_per_clip
    prompt = "mask" if sc.kind == "mask" else f"1 point + {sc.clicks} correction clicks"
    return (
        f"{sc.model} {sc.image_size}px, {sc.frames} frames, {sc.clips} clip(s) x "
        f"{sc.objects_per_clip} objects ({n}), {prompt} on frame 0; "
        f"{sc.steps} timed steps"
    )


def machine_line(threads: int, load_before: tuple[float, ...]) -> str:
    loads = " / ".join(" ".join(f"{x:.2f}" for x in la) for la in (load_before, os.getloadavg()))
    return (
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {threads}, "
        f"load average (1/5/15 min) before / after: {loads}"
    )


def _header(rows: list[Row], command: str, machine: str) -> list[str]:
    sc = rows[0].scenario
    return [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M')}); {machine}.",
        f"Step = forward + loss + backward + AdamW over {' + '.join(TRAINABLE)}. Median of "
        f"the timed steps after {sc.warmup} warm-up steps, the variants' steps "
        f"interleaved in one process; memory from a separate process per variant. "
        f"Goal: ours/theirs <= {GOAL_RATIO}.",
        "",
        *[f"- `{r.scenario.name}`: {describe(r.scenario)}" for r in rows],
        "",
    ]


def cpu_report(rows: list[Row], command: str, machine: str) -> list[str]:
    return [*_header(rows, command, machine), "CPU:", "", *table(rows, gpu=False)]


def gpu_report(rows: list[Row], command: str, machine: str) -> list[str]:
    gpu_name = torch.cuda.get_device_name(0)
    return [
        *_header(rows, command, f"{machine}, GPU {gpu_name}"),
        f"GPU ({gpu_name}, bf16 autocast):",
        "",
        *table(rows, gpu=True),
    ]


def _replace_block(text: str, begin: str, end: str, body: list[str]) -> str:
    block = "\n".join([begin, *body, end])
    pattern = re.escape(begin) + r".*?" + re.escape(end)
    return re.sub(pattern, lambda _: block, text, count=1, flags=re.S)


def write_section(path: Path, cpu: list[str] | None, gpu: list[str] | None) -> None:
    """Rewrite the CPU and/or GPU block inside "## Training" (None: keep that block as it
    is); every other line of the file is kept."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if BEGIN not in text or END not in text:
        cpu_block = "\n".join([BEGIN, "CPU: not measured yet (`python -m bench.train`).", END])
        # our section without the markers yet (or none): its body is ours to replace
        text = replace_section(text, SECTION.removeprefix("## "), cpu_block)
    if GPU_BEGIN not in text or GPU_END not in text:  # right after the CPU block
        gpu_block = "\n".join([GPU_BEGIN, *GPU_NOT_MEASURED, GPU_END])
        text = text.replace(END, f"{END}\n\n{gpu_block}", 1)
    if cpu is not None:
        text = _replace_block(text, BEGIN, END, cpu)
    if gpu is not None:
        text = _replace_block(text, GPU_BEGIN, GPU_END, gpu)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def run_scenario(sc: Scenario, seed: int) -> Row:
    timing = spawn("time", sc, seed)
    ours, theirs = spawn("ours", sc, seed), spawn("theirs", sc, seed)
    uncached = {"times": timing["times"]["ours_uncached"]}
    ours["times"], theirs["times"] = timing["times"]["ours"], timing["times"]["theirs"]
    ours["threads"] = timing["threads"]
    return Row(sc, ours, uncached, theirs)


def run_all(scenarios: list[Scenario], seed: int) -> tuple[list[Row], list[str]]:
    """Rows of the scenarios that ran, and one line per scenario that failed: a failure
    (say a GPU out of memory) is reported and does not cost the other rows."""
    rows, failed = [], []
    if scenarios:
        print("\n".join(table([], gpu=scenarios[0].device == "cuda")), flush=True)
    for sc in scenarios:
        try:
            rows.append(run_scenario(sc, seed))
        except RuntimeError as err:
            print(err, file=sys.stderr, flush=True)
            last = str(err).strip().splitlines()[-1]
            failed.append(f"`{sc.name}` failed: {last}")
            continue
        print("\n".join(table([rows[-1]], gpu=sc.device == "cuda")[2:]), flush=True)
    return rows, failed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--large", action="store_true", help="also Hiera-T 256 px on CPU (~2 s/step)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--no-gpu", action="store_true", help="skip the CUDA scenarios")
    where.add_argument("--gpu-only", action="store_true", help="only the CUDA scenarios")
    p.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SCENARIOS),
        metavar="SCENARIO",
        help="run just these scenarios (CPU ones with or without --large)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: torch.profiler's top operators of our step for "
        "each selected scenario (printed; nothing written)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random clip tensors")
    p.add_argument("--results", type=Path, default=RESULTS_PATH, help="markdown file to update")
    p.add_argument("--child", choices=("time", "profile", *VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        sc = SCENARIOS[args.scenario]
        if args.child == "time":
            print(json.dumps(run_timing(sc, args.seed)))
        elif args.child == "profile":
            run_profile(sc, args.seed)
        else:
            print(json.dumps(run_memory(args.child, sc, args.seed)))
        return
    if args.gpu_only and not torch.cuda.is_available():
        sys.exit(
            "bench.train --gpu-only: no CUDA device here (torch.cuda.is_available() is "
            "False); run it on a GPU machine, or drop --gpu-only"
        )
    cpu_scenarios = [] if args.gpu_only else TINY + (LARGE if args.large or args.only else [])
    gpu_scenarios = GPU if torch.cuda.is_available() and not args.no_gpu else []
    if args.only:  # named scenarios run whatever --large says; CUDA ones need CUDA
        cpu_scenarios = [sc for sc in cpu_scenarios if sc.name in args.only]
        gpu_scenarios = [sc for sc in gpu_scenarios if sc.name in args.only]
    if not cpu_scenarios + gpu_scenarios:
        sys.exit("bench.train: no scenario selected (a GPU scenario needs CUDA here)")
    if args.profile:
        for sc in cpu_scenarios + gpu_scenarios:
            print(f"== {sc.name}", flush=True)
            subprocess.run(
                _child_command("profile", sc, args.seed),
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        return
    load_before = os.getloadavg()
    cpu, cpu_failed = run_all(cpu_scenarios, args.seed)
    gpu, gpu_failed = run_all(gpu_scenarios, args.seed)
    command = "python -m bench.train" + " --large" * args.large + " --gpu-only" * args.gpu_only
    command += f" --only {' '.join(args.only)}" if args.only else ""
    machine = machine_line(torch.get_num_threads(), load_before)
    write_section(
        args.results,
        cpu_report(cpu, command, machine) + _failures(cpu_failed) if cpu else None,
        gpu_report(gpu, command, machine) + _failures(gpu_failed) if gpu else None,
    )
    if cpu + gpu:
        worst = max(r.ratio for r in cpu + gpu)
        print(
            f"bench.train: worst ours/theirs {worst:.2f} (goal <= {GOAL_RATIO}); "
            f"wrote {args.results}"
        )
    if cpu_failed + gpu_failed:
        sys.exit("bench.train: " + "; ".join(cpu_failed + gpu_failed))


def _failures(failed: list[str]) -> list[str]:
    return ["", *[f"- {line}" for line in failed]] if failed else []


if __name__ == "__main__":
    main()
