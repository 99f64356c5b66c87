"""Training throughput of the proposed net: dense vs receptive-field backward, float32 vs bfloat16.

Times full training steps (forward, backward, Adam) on random batches of 64 patches with
the current thread count, prints patches/s, the fraction of the measured fp32 peak
(counting the FLOPs each path really does), the ratio to the dense fp32 step, and the
projected wall time of the paper's protocol (10,088 patches × 100 epochs).

    python benchmarks/bench_train.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from mccscan.models import training_flops_per_patch
from mccscan.paper import build_model
from mccscan.perf import peak_flops

PAPER_SAMPLES = 10_088 * 100


def patches_per_s(path: str, bf16: bool, steps: int, batch: int = 64) -> float:
    torch.manual_seed(0)
    model = build_model("proposed").to(memory_format=torch.channels_last).train()
    forward = model.training_forward if path == "receptive-field" else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 144, 144).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch) > 0.5).float()
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x).float()
        loss = F.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:  # warm-up steps left out
            times.append(time.perf_counter() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = peak_flops()
    model = build_model("proposed")
    flops = {"dense": 3 * model.flops_per_patch(), "receptive-field": training_flops_per_patch(model)}
    print(f"{torch.get_num_threads()} threads, measured fp32 peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'backward':<17}{'dtype':<7}{'patches/s':>10}{'of peak':>9}{'ratio':>7}{'paper protocol':>16}")
    base = None
    for path in ("dense", "receptive-field"):
        for bf16 in (False, True):
            rate = patches_per_s(path, bf16, args.steps)
            base = base or rate
            print(f"{path:<17}{'bf16' if bf16 else 'fp32':<7}{rate:>10.0f}{rate * flops[path] / peak:>9.0%}"
                  f"{rate / base:>6.2f}×{PAPER_SAMPLES / rate / 60:>12.0f} min")


if __name__ == "__main__":
    main()
