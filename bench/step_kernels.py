"""One chunk's forward and backward on the CPU, with and without each kernel-level change: what each is worth.

Each variant runs in its own process (`--child`), the variants interleaved A B C A B C, and the median seconds of
--iters passes after a first (warm-up or compiling) pass is reported with that first pass and the process's peak
RSS. The pass is TuneDesk's: the default model in float32, LoRA r8 alpha 16 on q_proj/v_proj (the default
benchmark's adapter), app.objectives.label_loss with its LabelGather (logits at label positions only), on one chunk
of --rows random-token rows of --width tokens, the first row right-padded to two thirds of the width (a chunk's
rows differ in length), labels on the second half of each row.

    eager             as trained today: SDPA attention with the padding mask, dropout 0.05
    no-dropout        lora_dropout 0: what the dropout masks cost (not a change: the run's setting decides)
    no-mask           no attention mask: right-padded rows under a causal mask never see their padding, so the
                      real positions get the same values and the kernel may take its causal path
    eager-attention   attn_implementation eager (matmul + softmax) instead of SDPA
    compile           torch.compile(model, dynamic=True): the whole model, one graph
    compile-layers    each decoder layer compiled on its own (dynamic=True): one compiled graph reused by all layers
    --profile         adds a torch.profiler table of the eager variant's ops (self CPU time) to the output

    python -m bench.step_kernels                              # 2 rows x 400, eager / no-mask / compile-layers
    python -m bench.step_kernels --variants eager no-dropout --rows 2 --width 170 --repeats 2
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/step_kernels.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

VARIANTS = ("eager", "no-dropout", "no-mask", "eager-attention", "compile", "compile-layers")


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.modeling import ensure_default_model
    from app.objectives import LabelGather, label_loss

    v = args.child
    torch.manual_seed(0)
    attention = "eager" if v == "eager-attention" else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(str(ensure_default_model()), dtype=torch.float32,
                                                 attn_implementation=attention)  # fmt: skip
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0 if v == "no-dropout" else 0.05,
                      target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    model.train()
    gather = LabelGather(model)
    forward = model
    if v == "compile":
        forward = torch.compile(model, dynamic=True)
    elif v == "compile-layers":
        for layer in model.get_base_model().model.layers:
            layer.compile(dynamic=True)
    rows, width = args.rows, args.width
    ids = torch.randint(0, model.config.vocab_size, (rows, width))
    mask = torch.ones(rows, width, dtype=torch.long)
    labels = ids.clone()
    labels[:, : width // 2] = -100
    short = max(2, width * 2 // 3)
    mask[0, short:] = 0
    labels[0, short:] = -100
    batch = {"input_ids": ids, "labels": labels}
    if v != "no-mask":
        batch["attention_mask"] = mask

    def one_pass() -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss, _ = label_loss(forward, batch, gather)
        loss.backward()
        return time.perf_counter() - start

    first = one_pass()
    times = [one_pass() for _ in range(args.iters)]
    result: dict[str, Any] = {"variant": v, "first_s": first, "median_s": statistics.median(times), "times": times,
                              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                              "threads": torch.get_num_threads()}  # fmt: skip
    if args.profile and v == "eager":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                one_pass()
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["eager", "no-mask", "compile-layers"])
    parser.add_argument("--rows", type=int, default=2, help="rows of the chunk (default 2)")
    parser.add_argument("--width", type=int, default=400, help="tokens per row (default 400)")
    parser.add_argument("--iters", type=int, default=6, help="timed passes per process after the first (default 6)")
    parser.add_argument("--repeats", type=int, default=2, help="processes per variant, interleaved (default 2)")
    parser.add_argument("--profile", action="store_true", help="an op table of the eager variant")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--threads", type=common.threads_arg, default="cores", help=common.THREADS_HELP)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.width < 4 or args.iters < 1 or args.repeats < 1:
        raise common.BenchError("--rows, --iters and --repeats must be at least 1 and --width at least 4")
    if args.child:
        common.emit_json(child(args))
        return 0
    runs: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        for v in args.variants:
            argv_child = ["bench.step_kernels", "--child", v, "--rows", str(args.rows), "--width", str(args.width),
                          "--iters", str(args.iters)] + (["--profile"] if args.profile else [])  # fmt: skip
            runs.append(common.run_json_child(argv_child, args.timeout, v, args.threads))
            print(f"[step_kernels] {v}: median {runs[-1]['median_s']:.3f} s, first {runs[-1]['first_s']:.1f} s",
                  file=sys.stderr)  # fmt: skip
    base = common.median(r["median_s"] for r in runs if r["variant"] == args.variants[0])
    rows = []
    for v in args.variants:
        mine = [r for r in runs if r["variant"] == v]
        med = common.median(r["median_s"] for r in mine)
        each = ", ".join(f"{r_s:.3f}" for r_s in (r["median_s"] for r in mine))
        firsts = ", ".join(f"{r_s:.1f}" for r_s in (r["first_s"] for r in mine))
        rows.append([v, f"{med:.3f} s ({each})", f"{base / med:.2f}x", firsts,
                     common.fmt_bytes(common.median(r["peak_rss_bytes"] for r in mine))])  # fmt: skip
    settings = {"rows": args.rows, "width": args.width, "iters": args.iters, "repeats": args.repeats,
                "variants": args.variants}  # fmt: skip
    path = common.write_result("step_kernels", {"settings": settings, "runs": runs})
    print(common.markdown_table(
        [f"{args.rows} x {args.width} chunk, forward + backward", "median pass (per process)",
         f"speed vs {args.variants[0]}", "first pass (s)", "peak RSS"], rows))  # fmt: skip
    for r in runs:
        if r.get("profile"):
            print("\n" + r["profile"])
            break
    print(f"\nresult: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
