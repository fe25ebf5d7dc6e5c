"""What a speed-up over the plain Trainer + PEFT script can reach on the default benchmark, counted in model FLOPs.

Both sides of `bench.train_throughput` run the same float32 GEMMs on the same CPU, so once both are GEMM-bound the
ratio of their useful tokens/s is at most the ratio of the FLOPs their batches cost, times the ratio of the FLOP
rates they sustain. This counts the FLOPs (bench.common.lora_train_flops, the formula bench.mfu uses) of:

* the floor: every example's real tokens once, no padding, logits at label positions only: what any trainer of
  these tokens must compute (LoRA on q/v in every layer needs the input gradient through every layer);
* TuneDesk's batches: its own epoch order (app.batching.epoch_order, length-grouped, seed 42) cut into the CPU
  chunks it trains (app.accel.row_splits at app.accel.CPU_CHUNK_TOKENS, each chunk padded to its own longest row),
  logits at label positions only;
* the plain script's batches: random batches of 4 padded to their longest row (the median and range over --orders
  random orders; the Trainer's own order is one of them), logits at every position.

Then, from a `bench.train_throughput` result (--result, default the newest), the model FLOP/s TuneDesk would
have to sustain for --target times the plain script's useful tokens/s, as a share of this machine's fp32 GEMM
peak (square GEMMs, as bench.mfu) and of the GEMM rate at the model's own shapes. That share is an MFU: a speed
target above the FLOP ratio is an MFU target in disguise. The peak is measured now and the plain script's rate
comes from the result file: on a machine whose speed drifts, run this right after the benchmark. The ratio that
does not drift: N times the plain script's tokens/s = N / (plain FLOPs / floor FLOPs) times its FLOP rate.

    python -m bench.ceiling                    # 128 records (the default benchmark), target 3x
    python -m bench.ceiling --records 32 --result bench/results/train_throughput-....json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/ceiling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

BATCH = 4
SEED = 42


def batch_flops(dims: common.Dims, batches: list[list[tuple[int, int]]], labels_only: bool) -> float:
    """Model FLOPs of micro-batches given as lists of (length, label count) rows, each padded to its longest."""
    total = 0.0
    for rows in batches:
        width = max(n for n, _ in rows)
        labels = sum(k for _, k in rows)
        total += common.lora_train_flops(dims, width * len(rows), labels, width * width * len(rows),
                                         logits_on_labels_only=labels_only)["total"]  # fmt: skip
    return total


def tunedesk_batches(rows: list[tuple[int, int]], chunk: int) -> list[list[tuple[int, int]]]:
    """TuneDesk's first epoch as the chunks it trains on the CPU (each chunk padded to its own longest row)."""
    from app import accel, batching

    order = batching.epoch_order([n for n, _ in rows], BATCH, SEED, 0, group=True)
    chunks = []
    for start in range(0, len(order), BATCH):
        batch = [rows[j] for j in order[start : start + BATCH]]
        width = max(n for n, _ in batch)
        at = 0
        for size in accel.row_splits(len(batch), width, chunk):
            chunks.append(batch[at : at + size])
            at += size
    return chunks


def random_batches(rows: list[tuple[int, int]], seed: int) -> list[list[tuple[int, int]]]:
    import torch

    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [[rows[j] for j in order[s : s + BATCH]] for s in range(0, len(order), BATCH)]


def newest_result() -> Path | None:
    found = sorted(common.RESULTS_DIR.glob("train_throughput-*.json"))
    return found[-1] if found else None


def measured(path: Path | None) -> dict[str, Any] | None:
    """Median useful tokens/s per arm of a bench.train_throughput result, and its record count."""
    import json

    if path is None:
        return None
    body = json.loads(path.read_text(encoding="utf-8"))
    rates: dict[str, list[float]] = {}
    for run in body.get("runs", []):
        rates.setdefault(run["impl"], []).append(float(run["useful_tokens_per_s"]))
    return {
        "file": str(path),
        "records": (body.get("settings") or {}).get("records"),
        "useful_tokens_per_s": {k: common.median(v) for k, v in rates.items()},
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from app import accel
    from app.data import prepare
    from app.modeling import ensure_default_model
    from bench import mfu
    from bench.train_throughput import data_config, load_base

    dims = common.Dims.from_folder(ensure_default_model())
    _, tokenizer, _ = load_base(tokenizer_only=True)
    examples = prepare(data_config(args), tokenizer).train
    rows = [(len(e.input_ids), sum(1 for lab in list(e.labels)[1:] if lab != -100)) for e in examples]
    counts = common.token_counts(examples)
    floor = common.lora_train_flops(dims, counts["input_tokens"], counts["useful_tokens"], counts["sum_seq_len_sq"])
    ours = batch_flops(dims, tunedesk_batches(rows, accel.CPU_CHUNK_TOKENS), labels_only=True)
    ours_whole = batch_flops(dims, tunedesk_batches(rows, 0), labels_only=True)
    plain = sorted(batch_flops(dims, random_batches(rows, s), labels_only=False) for s in range(args.orders))
    plain_median = common.median(plain)
    result: dict[str, Any] = {
        "epoch": counts,
        "flops": {
            "floor": floor["total"],
            "floor_parts": floor,
            "tunedesk_chunks": ours,
            "tunedesk_whole": ours_whole,
            "plain_median": plain_median,
            "plain_min": plain[0],
            "plain_max": plain[-1],
        },
        "flop_ratio_plain_over_floor": plain_median / floor["total"],
        "flop_ratio_plain_over_tunedesk": plain_median / ours,
        "target": args.target,
    }
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = max(mfu.square_peak(args.sizes, args.reps).values())
    shape_tokens = max(1, round(counts["input_tokens"] / math.ceil(len(rows) / BATCH)))
    shape_rate = mfu.model_shape_rate(dims, min(shape_tokens, accel.CPU_CHUNK_TOKENS), args.reps)
    result.update({"threads": torch.get_num_threads(), "peak_flops": peak, "model_shape_gemm_flops": shape_rate})
    bench = measured(args.result or newest_result())
    if bench and bench["records"] not in (None, args.records):
        print(f"[ceiling] {bench['file']} has {bench['records']} records, not {args.records}: not used",
              file=sys.stderr)  # fmt: skip
        bench = None
    if bench and "baseline" in bench["useful_tokens_per_s"]:
        need_rate = args.target * bench["useful_tokens_per_s"]["baseline"]
        seconds = counts["useful_tokens"] / need_rate
        need_flops = floor["total"] / seconds  # at the floor: no padding at all
        result["needed"] = {
            "bench": bench,
            "useful_tokens_per_s": need_rate,
            "epoch_step_s": seconds,
            "model_flops_per_s": need_flops,
            "share_of_peak": need_flops / peak,
            "share_of_model_shape_rate": need_flops / shape_rate,
        }
        for impl, rate in bench["useful_tokens_per_s"].items():
            if impl.startswith("tunedesk"):
                result.setdefault("achieved", {})[impl] = floor["total"] / (counts["useful_tokens"] / rate)
    return result


def render(r: dict[str, Any]) -> str:
    t, g = 1e12, 1e9
    f = r["flops"]
    rows = [
        ["floor: real tokens once, logits at labels only", f"{f['floor'] / t:.2f} TFLOP", "1.00"],
        ["TuneDesk batches (CPU chunks)", f"{f['tunedesk_chunks'] / t:.2f} TFLOP",
         f"{f['tunedesk_chunks'] / f['floor']:.2f}"],
        ["TuneDesk batches (whole)", f"{f['tunedesk_whole'] / t:.2f} TFLOP",
         f"{f['tunedesk_whole'] / f['floor']:.2f}"],
        ["plain script, random batches of 4, full logits (median)", f"{f['plain_median'] / t:.2f} TFLOP "
         f"({f['plain_min'] / t:.2f}-{f['plain_max'] / t:.2f})", f"{f['plain_median'] / f['floor']:.2f}"],
    ]  # fmt: skip
    out = common.markdown_table(["model FLOPs of the epoch", "FLOPs", "/ floor"], rows)
    out += (f"\n\nfp32 GEMM peak {r['peak_flops'] / g:.1f} GFLOP/s (square), {r['model_shape_gemm_flops'] / g:.1f} "
            f"GFLOP/s at the model's shapes, {r['threads']} threads")  # fmt: skip
    need = r.get("needed")
    if need:
        rates = need["bench"]["useful_tokens_per_s"]
        out += (
            f"\n{r['target']:g}x the plain script's {rates['baseline']:.1f} useful tokens/s = "
            f"{need['useful_tokens_per_s']:.1f} tokens/s = the epoch in {need['epoch_step_s']:.0f} s of steps: at the "
            f"floor's FLOPs, {need['model_flops_per_s'] / g:.1f} GFLOP/s sustained = "
            f"{100 * need['share_of_peak']:.0f}% of the GEMM peak, {100 * need['share_of_model_shape_rate']:.0f}% of "
            f"the model-shape GEMM rate ({need['bench']['file']})"
        )
        for impl, achieved in r.get("achieved", {}).items():
            share = 100 * achieved / r["peak_flops"]
            out += f"\n{impl} there: {achieved / g:.1f} GFLOP/s of floor FLOPs ({share:.0f}% of the peak)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=128, help="records of the benchmark (default 128)")
    parser.add_argument("--orders", type=int, default=20, help="random orders for the plain script's batches")
    parser.add_argument("--target", type=float, default=3.0, help="speed-up over the plain script (default 3)")
    parser.add_argument("--result", type=Path, help="a bench.train_throughput result (default: the newest)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096], help="square GEMM sizes for the peak")
    parser.add_argument("--reps", type=int, default=5, help="timed GEMMs per size (median)")
    parser.add_argument("--data", type=Path, default=common.ALPACA_EN)
    parser.add_argument("--val-size", type=float, default=0.0)
    parser.add_argument("--threads", type=common.threads_arg, default="cores", help=common.THREADS_HELP)
    args = parser.parse_args(argv)
    common.require("app.batching", "epoch_order")
    if not args.data.is_file():
        raise common.Skip(f"{args.data} is absent (the real Alpaca data lives in ../shared/data); pass --data FILE")
    if args.result is not None and not args.result.is_file():
        raise common.BenchError(f"--result {args.result}: no such file; pass a bench/results/train_throughput-*.json")
    result = measure(args)
    result["settings"] = {"records": args.records, "orders": args.orders, "sizes": args.sizes, "reps": args.reps,
                          "data": str(args.data)}  # fmt: skip
    path = common.write_result("ceiling", result)
    print(render(result))
    print(f"\nresult: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
