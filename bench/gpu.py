"""GPU benchmark: tokens/s, MFU against the GPU's bf16 peak, and peak memory against app.memory's estimate, for the
default model (LoRA preset) and Llama 3.1 8B QLoRA (presets/llama-3.1-8b-qlora-24gb.yaml), a few steps each.

Each case is one epoch of exactly --steps optimizer steps (data.max_samples = steps x batch x accumulation of the
preset, no validation split) through `app.train.run`, in a fresh child process so each peak is its own. Per case:
    tokens/s      input tokens of the epoch / seconds inside optimizer steps (the finished event's train_s)
    MFU           model FLOPs of the epoch (bench.common.lora_train_flops: frozen linears, adapters, attention
                  scores, output layer at label positions) / train_s / the GPU's peak: PEAK_BF16_TFLOPS by device
                  name (dense bf16 tensor-core figures), else a measured bf16 8192^3 GEMM
    peak memory   torch.cuda.max_memory_allocated() of the run against app.memory's allocated_bytes for the same
                  config as app.accel plans it on this GPU (what max_memory_allocated should read)
The options of app.accel apply as a user sets them: --attn flash_attention_2 (the default here: sdpa where flash-attn
is missing or the GPU is older than Ampere, with the run's message), --liger, --compile; each row says what ran.

    python -m bench.gpu                       # both cases, 10 steps each
    python -m bench.gpu --cases default --steps 20 --liger --compile

train_s includes torch.compile's compile (tens of seconds) and the first steps' warm-up: with --compile, or to
compare options, give --steps 50 or more. Liger and torch.compile together train (the losses agree) but dynamo
cannot trace Liger's Triton kernels and leaves them uncompiled, with warnings.

On a machine without CUDA it exits 3 (bench.common.SKIP_EXIT) saying so. The 8B case needs the model on disk or
the hub reachable (and ~10 GB of GPU memory); a case that fails prints its run's message in its row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/gpu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

PRESETS = {
    "default": common.ROOT / "presets" / "smollm2-135m-lora-cpu.yaml",
    "8b-qlora": common.ROOT / "presets" / "llama-3.1-8b-qlora-24gb.yaml",
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "RTX 4090": 165.0, "3090": 71.0}
"""Dense bf16 tensor-core peaks (vendor datasheets, SXM parts; an H100 PCIe is ~756), matched in the device name."""
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def case_config(case: str, args: argparse.Namespace, run_root: Path) -> Any:
    """The preset as the Train tab would load it, set for a GPU, the benchmark's data and exactly `steps` steps."""
    from app.config import RunConfig

    cfg = RunConfig.from_preset(PRESETS[case])
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    return cfg.replace(
        **{
            "model.name_or_path": args.model or cfg.model.name_or_path,
            "model.attn_implementation": args.attn,
            "data.path": str(args.data),
            "data.max_samples": args.steps * per_step,
            "data.val_size": 0.0,
            "train.device": "cuda",
            "train.precision": "auto",
            "train.epochs": 1.0,
            "train.max_steps": None,
            "train.save_steps": 0,
            "train.learn_check": 0,
            "train.eval_generations": 0,
            "train.sample_every": 0,
            "train.report_to": [],
            "train.liger_kernel": args.liger,
            "train.torch_compile": args.compile,
            "train.output_dir": str(run_root),
        }
    )


def peak_flops(reps: int = 10) -> tuple[float, str]:
    """The GPU's bf16 peak FLOP/s and where the figure comes from (the table, or a measured GEMM)."""
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key.lower() in name.lower():
            return tflops * 1e12, f"{name}: datasheet {tflops:.0f} TFLOP/s"
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rate = 2 * n**3 / common.median(times)
    return rate, f"{name}: measured bf16 {n}^3 GEMM {rate / 1e12:.0f} TFLOP/s"


def child(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in this process: train, then the figures from its events, the GPU and the estimate."""
    import torch

    from app import accel, memory, modeling, objectives, runs, train

    run_root = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    os.environ["TUNEDESK_RUNS"] = str(run_root)
    cfg = case_config(case, args, run_root)
    plan = accel.plan(cfg, "cuda", str(modeling.resolve_dtype(cfg.train.precision, "cuda")).replace("torch.", ""))
    row: dict[str, Any] = {"case": case, "plan": plan.to_dict()}
    try:
        row["estimate_bytes"] = memory.estimate_config(plan.apply(cfg), "cuda").allocated_bytes
    except Exception as exc:  # an architecture the estimator does not know: the row says so
        row["estimate_bytes"], row["estimate_error"] = None, str(exc)
    run_dir = runs.create_run(cfg)
    torch.cuda.reset_peak_memory_stats()
    row["status"] = train.run(cfg, run_dir)
    row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    events = {e["type"]: e for e in _events(run_dir)}
    if row["status"] != "finished":
        row["message"] = (events.get("failed") or events.get("stopped") or {}).get("message", "no message")
        return row
    started, finished = events["started"], events["finished"]
    tokenizer = modeling.load_tokenizer(started["model"], cfg.model.trust_remote_code)
    lengths = objectives.of(cfg).prepare(cfg, tokenizer).train.lengths
    dims = common.Dims.from_folder(started["model"])
    targets = cfg.lora.target_modules
    targets = ALL_LINEAR if targets == "all-linear" else tuple(t for t in targets if t in dims.linear_shapes())
    tokens, labels = int(started["tokens_per_epoch"]), int(started["label_tokens_per_epoch"])
    flops = common.lora_train_flops(
        dims, tokens, labels, int(sum(int(n) ** 2 for n in lengths)), cfg.lora.rank, targets
    )
    peak, peak_source = peak_flops()
    train_s = float(finished["train_s"])
    row.update(
        steps=finished.get("step"),
        tokens=tokens,
        label_tokens=labels,
        train_s=train_s,
        tokens_per_s=tokens / train_s,
        flops=flops["total"],
        peak_flops=peak,
        peak_source=peak_source,
        mfu=flops["total"] / train_s / peak,
    )
    return row


def _events(run_dir: Path) -> list[dict]:
    from app import history

    return history.load_events(run_dir)


def render(rows: list[dict[str, Any]]) -> str:
    table = []
    for r in rows:
        p = r["plan"] or {"attn_implementation": "?", "liger_kernel": False, "torch_compile": False, "optimizer": "?"}
        options = f"{p['attn_implementation']}, liger {'on' if p['liger_kernel'] else 'off'}, " + (
            f"compile {'on' if p['torch_compile'] else 'off'}, {p['optimizer']}"
        )
        est, peak = r.get("estimate_bytes"), r.get("peak_allocated_bytes")
        ratio = f"{peak / est:.2f}x" if est and peak else "n/a"
        if r["status"] != "finished":
            table.append([r["case"], options, f"{r['status']}: {r.get('message', '')}", "", "", "", ""])
            continue
        table.append([
            r["case"], options, f"{r['tokens_per_s']:,.0f}", f"{100 * r['mfu']:.1f}%",
            common.fmt_bytes(peak), common.fmt_bytes(est), ratio,
        ])  # fmt: skip
    head = ["case", "options that ran", "tokens/s", "MFU", "peak allocated", "estimate", "peak / estimate"]
    notes = {m for r in rows for m in (r["plan"] or {}).get("messages", [])}
    notes |= {r["peak_source"] for r in rows if "peak_source" in r}
    return common.markdown_table(head, table) + "".join(f"\n- {n}" for n in sorted(notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(PRESETS), default=list(PRESETS))
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per case, one epoch (default 10)")
    parser.add_argument("--data", type=Path, default=common.ALPACA_EN)
    parser.add_argument("--model", help="a model folder or hub id instead of the preset's (a local copy of the 8B)")
    parser.add_argument("--attn", default="flash_attention_2", choices=("flash_attention_2", "sdpa", "eager"))
    parser.add_argument("--liger", action="store_true", help="train.liger_kernel (needs pip install liger-kernel)")
    parser.add_argument("--compile", action="store_true", help="train.torch_compile")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    parser.add_argument("--child", choices=sorted(PRESETS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise common.Skip(
            f"no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): bench.gpu measures "
            "GPU training; run it on a machine with an NVIDIA GPU and a CUDA build of PyTorch"
        )
    if not args.data.is_file():
        raise common.Skip(f"{args.data} is absent (the Alpaca data lives in ../shared/data); pass --data FILE")
    if args.child:
        common.emit_json(child(args.child, args))
        return 0
    rows = []
    for case in args.cases:
        flags = [*(["--liger"] if args.liger else []), *(["--compile"] if args.compile else [])]
        flags += ["--model", args.model] if args.model else []
        argv_child = ["bench.gpu", "--child", case, "--steps", str(args.steps), "--data", str(args.data),
                      "--attn", args.attn, *flags]  # fmt: skip
        try:
            rows.append(common.run_json_child(argv_child, args.timeout, case))
        except common.BenchError as exc:  # the child crashed (not a failed run, which has its row): say so, go on
            rows.append({"case": case, "plan": None, "status": "crashed", "message": str(exc)[-400:]})
    result = {"rows": rows, "settings": vars(args) | {"data": str(args.data)}, "steps": args.steps}
    path = common.write_result("gpu", json.loads(json.dumps(result, default=str)))
    print(render(rows))
    print(f"\nresult: {path}")
    return 0 if all(r["status"] == "finished" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(common.run_main(main))
