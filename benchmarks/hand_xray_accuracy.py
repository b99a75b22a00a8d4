"""Accuracy of hand_xray on generated phantoms: limb count, marker letters, kept hand.

python benchmarks/hand_xray_accuracy.py [--cases 300] [--seed 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipelines.hand_xray.accuracy import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    totals = {"limb count": 0, "marker letters": 0, "selected hand": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for k, phantom, result, score in evaluate(args.cases, args.seed, Path(tmp)):
            totals["limb count"] += score.limb_count_ok
            totals["marker letters"] += score.markers_ok
            totals["selected hand"] += score.selected_ok
            if not (score.limb_count_ok and score.markers_ok and score.selected_ok):
                found = [m["letter"] for m in result.details["markers"]]
                print(f"case {k}: truth sides={phantom.sides} markers={phantom.marker_letters}; {result.text} {found}")
    for task, right in totals.items():
        print(f"{task:15s} {right}/{args.cases} = {100.0 * right / args.cases:.1f} %")


if __name__ == "__main__":
    main()
