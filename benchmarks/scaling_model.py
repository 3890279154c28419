"""The paper model behind docs/scaling.md: when does the NCCL ring all-reduce overtake the compute?

    python benchmarks/scaling_model.py

Step time on N GPUs, strong scaling (global batch B): t(N) = t0 + (B/N)·f/F + a(N), with the ring
all-reduce a(N) = 2(N−1)·α + 2(N−1)/N · S/β. Every constant below is an assumption stated in
docs/scaling.md, not a measurement (this machine has no GPU).
"""

from __future__ import annotations

import math

LINKS = {  # name: (bandwidth per direction in bytes/s, per-hop latency in s)
    "NVLink 4 (H100 SXM)": (450e9, 3e-6),
    "InfiniBand NDR 400 Gb/s": (50e9, 5e-6),
    "Ethernet 100 Gb/s": (12.5e9, 15e-6),
}
NETS = {  # name: (parameters, forward+backward FLOPs per sample)
    "reference (1310 params)": (1310, 10e6),
    "wide (0.57 M params)": (570_000, 90e6),
    "ResNet-50-sized (25.6 M)": (25_600_000, 24e9),
}
T0 = 200e-6  # per-step floor on a GPU: ~40 kernel launches x ~5 us (launch-bound for tiny nets)
FLOPS = 25e12  # achieved fp32 FLOP/s on an H100 for these convs (~40% of the ~60 TFLOP/s peak)
BYTES = 4  # float32 gradients


def allreduce_s(n: int, nbytes: float, bandwidth: float, latency: float) -> float:
    """Ring all-reduce time: 2(N−1) latency hops plus 2(N−1)/N of the buffer over each link."""
    return 0.0 if n == 1 else 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth


def compute_s(n: int, batch: int, flops_per_sample: float) -> float:
    return T0 + batch / n * flops_per_sample / FLOPS


def crossover(batch: int, params: int, flops: float, bandwidth: float, latency: float) -> int | None:
    """Smallest N (up to 4096) at which the all-reduce takes longer than the compute of a step."""
    for n in range(2, 4097):
        if allreduce_s(n, (params + 1) * BYTES, bandwidth, latency) > compute_s(n, batch, flops):
            return n
    return None


def main() -> None:
    for batch in (64, 1024):
        print(f"\nglobal batch {batch}: N where all-reduce > compute (strong scaling), and a(8) / compute(8)")
        print(f"{'net':<28}{'link':<26}{'bytes':>12}{'a(8) us':>10}{'comp(8) us':>12}{'crossover N':>13}")
        for net, (params, flops) in NETS.items():
            for link, (bw, lat) in LINKS.items():
                nbytes = (params + 1) * BYTES
                n = crossover(batch, params, flops, bw, lat)
                print(
                    f"{net:<28}{link:<26}{nbytes:>12}{allreduce_s(8, nbytes, bw, lat) * 1e6:>10.1f}"
                    f"{compute_s(8, batch, flops) * 1e6:>12.1f}{n if n else '>4096':>13}"
                )
    lat_bw = {link: math.inf for link in LINKS}
    for link, (bw, lat) in LINKS.items():
        lat_bw[link] = lat * bw
    print("\nbuffer size where bandwidth time equals latency time per hop (alpha * beta):")
    for link, size in lat_bw.items():
        print(f"  {link:<26}{size / 1e3:>8.0f} kB")


if __name__ == "__main__":
    main()
