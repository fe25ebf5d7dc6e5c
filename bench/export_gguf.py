"""GGUF export time per file type: the default model (SmolLM2-135M-Instruct) exported to every type
commands.GGUF_QUANTS offers, each in a fresh process, with the file size and peak RSS; then the time for an 8B
model estimated from the default model's seconds per parameter (both the writer and llama.cpp's quantizer go
through every weight once, so their time grows with the parameter count; the estimate ignores disk speed for a
16 GB F16 file, which a measurement on a large machine should replace).

    python -m bench.export_gguf                 # every type, 1 repeat
    python -m bench.export_gguf --repeats 3 --types q4_k_m,q8_0

The merge of an adapter that precedes an export from an adapter is timed apart (`merge` row: a LoRA r16 on every
linear layer of the default model, merged in float32), since the Export tab merges first when given an adapter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/export_gguf.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

PARAMS_8B = 8.03e9
"""Llama-3.1-8B's parameter count (catalog), the 8B the table estimates for."""

CHILD = "bench.export_gguf"


def child(quant: str, out: str) -> None:
    """In a fresh process: export the cached default model to `quant` into `out`; print the timing as JSON."""
    import time

    from app import export, gguf
    from app.modeling import default_model_dir

    folder = default_model_dir()
    t0 = time.perf_counter()
    if quant == "merge":
        adapter = _adapter(folder, Path(out) / "adapter")
        t0 = time.perf_counter()
        path = export.merge(adapter, Path(out) / "merged", "float32", str(folder), progress=lambda f, m: None)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        path = export.export_gguf(folder, Path(out) / "gguf", quant, progress=lambda f, m: None)
        size = path.stat().st_size
    seconds = time.perf_counter() - t0
    common.emit_json({"quant": quant, "seconds": seconds, "bytes": size, "params": gguf.count_params(folder),
                      "peak_rss": common.peak_rss_bytes()})  # fmt: skip


def _adapter(folder: Path, out: Path) -> Path:
    """A LoRA r16 on every linear layer with non-zero B (what a trained adapter merges), saved as training saves."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))  # fmt: skip
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    from app import commands

    parser = argparse.ArgumentParser(prog="python -m bench.export_gguf", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--types", default=",".join(("merge", *commands.GGUF_QUANTS)))
    parser.add_argument("--child", nargs=2, metavar=("QUANT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    common.require("app.llamacpp", "quantize")
    results: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for quant in args.types.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
                got = common.run_json_child([CHILD, "--child", quant, tmp], timeout=1800, label=quant)
            results.setdefault(quant, []).append(got)
            print(f"{quant}: {got['seconds']:.1f} s, {common.fmt_bytes(got['bytes'])}", file=sys.stderr, flush=True)
    rows = []
    for quant, runs in results.items():
        seconds = common.median(r["seconds"] for r in runs)
        per_param = seconds / runs[0]["params"]
        rows.append([quant, seconds, common.fmt_bytes(runs[0]["bytes"]), common.fmt_bytes(runs[0]["peak_rss"]),
                     per_param * PARAMS_8B / 60])  # fmt: skip
    print(common.markdown_table(["type", "default model, s (median)", "file", "peak RSS", "8B estimate, min"], rows))
    path = common.write_result("export_gguf", {"repeats": args.repeats, "results": results})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(common.run_main(main))
