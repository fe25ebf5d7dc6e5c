"""MFU: TuneDesk's achieved training FLOP/s on the default model as a share of this machine's measured float32
matmul peak (target >= 60%).

Peak: square fp32 GEMMs (--sizes, default 2048 and 4096) with the thread count training used, median of --reps
after a warm-up, measured before and after the training run; the best size's median is the peak.
Achieved: one epoch of TuneDesk LoRA training (the default model, fp32 on the CPU, the first --records records of
alpaca_en_demo.json, batch 4, the same settings as bench/train_throughput.py, whose child runs it), model FLOPs
of that epoch (bench.common.lora_train_flops: 4*N*T for frozen linears, 6*r*(in+out)*T for the adapters,
12*layers*d*sum(L^2) for attention scores, 4*V*h per label position for the output layer; padding not counted)
divided by the run's step seconds (`train_s` of its `finished` event) and, second, by its wall seconds.
Also reported: the GEMM rate at the model's own shapes (tokens of one batch x 576 x 1536 ...), which is what a
small model can reach at best; the gap between the two peaks is the shape, not the trainer.

    python -m bench.mfu            # 64 records (16 steps), GEMMs 2048 and 4096, 5 reps
    python -m bench.mfu --quick    # 16 records (4 steps), GEMM 1024, 3 reps
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/mfu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

TARGET = 0.60


def gemm_rate(m: int, k: int, n: int, reps: int, warmup: int = 2) -> float:
    """Median FLOP/s of (m x k) @ (k x n) in float32: 2*m*k*n FLOPs per product."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    for _ in range(warmup):
        torch.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / common.median(times)


def square_peak(sizes: list[int], reps: int) -> dict[str, float]:
    return {str(n): gemm_rate(n, n, n, reps) for n in sizes}


def model_shape_rate(dims: common.Dims, tokens: int, reps: int) -> float:
    """FLOP-weighted GEMM rate over one decoder layer's projections at `tokens` rows (forward shapes)."""
    flops = secs = 0.0
    for k, n in dims.linear_shapes().values():
        rate = gemm_rate(tokens, k, n, reps)
        f = 2 * tokens * k * n
        flops, secs = flops + f, secs + f / rate
    return flops / secs


def epoch_counts(args: argparse.Namespace) -> dict[str, int]:
    """Token counts of the epoch TuneDesk trains, from the same app.data.prepare it calls."""
    from app.data import prepare
    from bench.train_throughput import data_config, load_base

    _, tokenizer, _ = load_base(tokenizer_only=True)
    return common.token_counts(prepare(data_config(args), tokenizer).train)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from app.modeling import ensure_default_model

    dims = common.Dims.from_folder(ensure_default_model())
    counts = epoch_counts(args)
    steps = math.ceil(counts["examples"] / 4)  # batch 4, no packing: exactly one epoch
    argv = ["bench.train_throughput", "--child", "tunedesk", "--records", str(args.records), "--steps", str(steps),
            "--data", str(args.data), "--val-size", str(args.val_size), "--no-heldin"]  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    before = square_peak(args.sizes, args.reps)
    run = common.run_json_child(argv, args.timeout, "tunedesk", args.threads)
    torch.set_num_threads(int(run.get("threads") or threads))  # the peak at the thread count training used
    after = square_peak(args.sizes, args.reps)
    peaks = {n: max(before[n], after[n]) for n in before}
    peak = max(peaks.values())
    flops = common.lora_train_flops(dims, counts["input_tokens"], counts["useful_tokens"], counts["sum_seq_len_sq"])
    batch_tokens = max(1, round(counts["input_tokens"] / steps))
    shape_rate = model_shape_rate(dims, batch_tokens, args.reps)
    achieved = flops["total"] / run["step_s"]
    facts = run.get("epoch_facts", {})
    trained = (facts.get("tokens_per_epoch"), facts.get("label_tokens_per_epoch"))
    if trained != (counts["input_tokens"], counts["useful_tokens"]):
        print(f"[mfu] warning: the trainer's epoch {facts} differs from the counted {counts}", file=sys.stderr)
    return {
        "dims": vars(dims),
        "epoch": counts,
        "steps": steps,
        "trainer_counts": {"useful_tokens": run["useful_tokens"], **run.get("epoch_facts", {})},
        "flops": flops,
        "step_s": run["step_s"],
        "wall_s": run["wall_s"],
        "threads": run.get("threads"),
        "peak_square_flops": {"before": before, "after": after},
        "peak_flops": peak,
        "model_shape_gemm_flops": shape_rate,
        "model_shape_tokens": batch_tokens,
        "achieved_flops": achieved,
        "achieved_wall_flops": flops["total"] / run["wall_s"],
        "mfu": achieved / peak,
        "mfu_wall": flops["total"] / run["wall_s"] / peak,
        "share_of_model_shape_rate": achieved / shape_rate,
        "target": TARGET,
    }


def render(r: dict[str, Any]) -> str:
    g = 1e9
    f = r["flops"]
    rows = [
        ["fp32 GEMM peak (square, best size, median)", f"{r['peak_flops'] / g:.1f} GFLOP/s", ""],
        [f"fp32 GEMM at the model's shapes ({r['model_shape_tokens']} tokens)",
         f"{r['model_shape_gemm_flops'] / g:.1f} GFLOP/s", ""],
        ["TuneDesk achieved (step time)", f"{r['achieved_flops'] / g:.1f} GFLOP/s", ""],
        ["MFU (step time)", f"{100 * r['mfu']:.1f}%", f">= {100 * TARGET:.0f}%"],
        ["MFU (wall, incl. collation)", f"{100 * r['mfu_wall']:.1f}%", ""],
        ["achieved / model-shape GEMM rate", f"{100 * r['share_of_model_shape_rate']:.1f}%", ""],
        ["model FLOPs of the epoch: linear / lora / attention / lm_head",
         " / ".join(f"{f[k] / 1e12:.2f}" for k in ("linear", "lora", "attention", "lm_head")) + " TFLOP", ""],
        ["tokens: input / label, steps, threads",
         f"{r['epoch']['input_tokens']} / {r['epoch']['useful_tokens']}, {r['steps']}, {r['threads']}", ""],
    ]  # fmt: skip
    return common.markdown_table(["MFU", "value", "target"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mfu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=64, help="records for the one-epoch run (default 64)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="square GEMM sizes for the peak")
    parser.add_argument("--reps", type=int, default=5, help="timed GEMMs per size (median)")
    parser.add_argument("--data", type=Path, default=common.ALPACA_EN)
    parser.add_argument("--val-size", type=float, default=0.0, help="passed to the training run (0)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--threads", type=common.threads_arg, default="cores", help=common.THREADS_HELP)
    parser.add_argument("--quick", action="store_true", help="16 records, GEMM 1024, 3 reps (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.sizes, args.reps = 16, [1024], 3
    common.require("app.train", "run")
    common.require("app.data", "prepare")
    if not args.data.is_file():
        raise common.Skip(f"{args.data} is absent (the real Alpaca data lives in ../shared/data); pass --data FILE")
    result = measure(args)
    result["settings"] = {"records": args.records, "sizes": args.sizes, "reps": args.reps, "data": str(args.data)}
    path = common.write_result("mfu", result)
    print(render(result))
    print(f"\nresult: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
