"""Time bone_age's parts: the full-size YOLOv3 detector (Darknet-53, 416 x 416) and the full-size grader
(ResNet-18 features, context Bi-GRU, filter gate, Bi-GRU over 13 crops of 128 x 128), both with random
weights (the time does not depend on them); the classical localisation on a phantom and on the real infant
hands (when ../shared/data is there); the scoring layer. Prints medians, parameter counts, peak memory and
how the times compare with a 2 s per-study target on the CPU.

python benchmarks/bench_bone_age.py [--repeats 5] [--device cpu|cuda] [--threads N] [--phantoms 40]

--phantoms N also scores the classical localisation on N random phantoms against their true boxes
(share of regions with IoU >= 0.5, per bone).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.localise import localise
from pipelines.bone_age.metrics import box_iou
from pipelines.bone_age.phantoms import HandSpec, make_hand, random_hand
from pipelines.bone_age.scoring import Standard, score_hand

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hand" / "radinformatics_infant"
TARGET_S = 2.0


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phantom_accuracy(count: int, seed: int = 2026) -> None:
    rng = np.random.default_rng(seed)
    hits = {b: 0 for b in BONE_KEYS}
    complete = 0
    for _ in range(count):
        phantom = make_hand(random_hand(rng))
        found = localise(phantom.image)
        complete += found.complete
        for bone in BONE_KEYS:
            if bone in found.regions:
                hits[bone] += box_iou(found.regions[bone].box, phantom.boxes[bone]) >= 0.5
    overall = sum(hits.values()) / (count * len(BONE_KEYS))
    print(f"classical localisation on {count} phantoms: all 13 found in {complete}, IoU >= 0.5 for {overall:.1%}")
    print("  per bone: " + ", ".join(f"{b} {hits[b] / count:.0%}" for b in BONE_KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--phantoms", type=int, default=0, help="score the classical localisation on N phantoms")
    args = parser.parse_args()
    if args.phantoms:
        phantom_accuracy(args.phantoms)
    import torch

    from pipelines.bone_age.detector import DetectorConfig, YoloV3, detect
    from pipelines.bone_age.grader import BoneAgeGrader, GraderConfig
    from pipelines.bone_age.inference import grade

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    phantom = make_hand(HandSpec(maturity=0.5, rows=1024, columns=800, seed=3))

    ms_scoring = _median_ms(lambda: score_hand(Standard.TW3, "F", {b: 4 for b in BONE_KEYS}), 200)
    print(f"scoring layer (13 bones -> TW3 bone age): {ms_scoring * 1000:.0f} us")

    ms_classical = _median_ms(lambda: localise(phantom.image), args.repeats)
    print(f"classical localisation, phantom 1024x800: {ms_classical:.0f} ms")
    real = sorted(SHARED.glob("*.png")) if SHARED.is_dir() else []
    if real:
        images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float32) for p in real]
        per_image = [_median_ms(lambda im=im: localise(im), 1, warmup=0) for im in images]
        median = statistics.median(per_image)
        print(f"classical localisation, {len(images)} real infant hands (~1000x1300): median {median:.0f} ms")

    detector = YoloV3(DetectorConfig()).to(args.device).eval()
    n_det = sum(p.numel() for p in detector.parameters())
    ms_detector = _median_ms(lambda: detect(detector, phantom.image, device=args.device), args.repeats)
    print(f"detector YOLOv3/Darknet-53 at 416x416: {n_det / 1e6:.1f} M parameters, {ms_detector:.0f} ms per hand")

    grader = BoneAgeGrader(GraderConfig()).to(args.device).eval()
    n_grader = sum(p.numel() for p in grader.parameters())
    boxes = phantom.boxes
    ms_grader = _median_ms(lambda: grade(grader, phantom.image, boxes, args.device), args.repeats)
    name = "grader ResNet-18 + filter gate + Bi-GRU, 13 crops 128x128"
    print(f"{name}: {n_grader / 1e6:.1f} M parameters, {ms_grader:.0f} ms per hand")

    total_s = (ms_detector + ms_grader) / 1000
    print(f"learned path per hand: {total_s:.2f} s ({total_s / TARGET_S:.2f} x the {TARGET_S:.0f} s target)")
    print(f"classical localisation + grader: {(ms_classical + ms_grader) / 1000:.2f} s")
    print(f"peak resident memory of this process: {_peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
