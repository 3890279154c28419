"""Where one training step of the reference network spends its time: each plan unit's forward and backward.

    python benchmarks/profile_step.py                  # batch 64, native kernels as built
    XPNN_NATIVE=0 python benchmarks/profile_step.py    # the NumPy twin
    XPNN_CPU_THREADS=1 python benchmarks/profile_step.py --batch 256

Prints the median over --steps steps (after --warmup) of each unit's forward and backward, the loss
and Adam, in ms: `profile_units.py` on workload (a), the reference train step, at any batch. The numbers
in docs/benchmarks.md's "changes" lists come from these two scripts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()
    import profile_units

    sys.argv = [sys.argv[0], "a", "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    profile_units.main()


if __name__ == "__main__":
    main()
