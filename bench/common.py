"""Shared helpers of the benchmarks: child processes with their own peak RSS, medians, result files, tables,
free ports, waiting for HTTP, and the FLOP count of a LoRA training step.

Every benchmark runs the thing it measures in a fresh subprocess, so imports, caches and memory of one
measurement never leak into the next. Results go to bench/results/<name>-<timestamp>.json (gitignored) with
the machine's load average, so a figure taken on a busy machine can be recognised as such.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"
ALPACA_EN = SHARED_DATA / "alpaca_en_demo.json"
SKIP_EXIT = 3
"""Exit status of a benchmark that cannot run yet (a module it measures has not landed); it prints why."""

# Nothing here may reach a hub: the default model comes from the converted cache.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class Skip(Exception):
    """A benchmark cannot run here yet; the message says what is missing and what to do."""


class BenchError(RuntimeError):
    """A measured program failed; the message carries the end of its output."""


def tail(text: str | None, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def missing(module: str, *attrs: str) -> str | None:
    """Why `module` (with `attrs`) cannot be used yet, or None when it can.

    >>> missing("json", "dumps") is None
    True
    """
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return f"{module} is not built yet"
        raise
    absent = [a for a in attrs if not hasattr(mod, a)]
    return f"{module} has no {', '.join(absent)} yet" if absent else None


def require(module: str, *attrs: str) -> None:
    """Raise Skip naming what is missing."""
    why = missing(module, *attrs)
    if why:
        raise Skip(why)


def run_main(fn, argv: Sequence[str] | None = None) -> int:
    """Call a benchmark's main, turning Skip into a clear message and SKIP_EXIT instead of a traceback."""
    try:
        return int(fn(argv) or 0)
    except Skip as exc:
        print(f"bench: skipped: {exc}", file=sys.stderr)
        return SKIP_EXIT
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1


# ---- child processes ------------------------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_json_child(args: Sequence[str], timeout: float, label: str, threads: int | None = None) -> dict[str, Any]:
    """Run `python -m <args>` from the checkout; it prints one JSON object as the LAST stdout line.

    `threads` sets OMP_NUM_THREADS (torch's intra-op threads) for the child; None leaves it to the child.
    Its stderr passes through (progress stays visible); a failure raises BenchError with the child's tail.
    """
    cmd = [sys.executable, "-m", *args]
    env = child_env(**({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == SKIP_EXIT:
        raise Skip(f"{label}: child skipped (see its message above)")
    if proc.returncode != 0 or not lines:
        raise BenchError(
            f"{label}: `{' '.join(cmd)}` exited {proc.returncode} (its stderr is above); stdout ends: {lines[-3:]}"
        )
    return json.loads(lines[-1])


def emit_json(payload: dict[str, Any]) -> None:
    """A child's answer to run_json_child: one JSON line, last on stdout."""
    sys.stdout.write("\n" + json.dumps(payload) + "\n")
    sys.stdout.flush()


def peak_rss_bytes() -> int:
    """This process's own high-water resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None, poll_s: float = 0.05) -> float:
    """Seconds until GET url answers 200; raises RuntimeError when proc exits first or on timeout."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the process serving {url} exited with status {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(poll_s)
    raise BenchError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate a child we started (SIGTERM, then SIGKILL after grace_s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- statistics, results, tables ------------------------------------------------------------------------------
def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated q-th percentile (q in 0-100), as numpy's default.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    vals = sorted(values)
    if not vals:
        raise ValueError("percentile of no values")
    pos = (len(vals) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def threads_arg(value: str) -> int | None:
    """--threads: a count, 'cores' (one per physical core, the default) or 'auto' (each program decides)."""
    if value == "auto":
        return None
    return physical_cores() if value == "cores" else int(value)


THREADS_HELP = (
    "torch threads for every training child: N, 'cores' (default: one per physical core, the same for "
    "both sides) or 'auto' (each decides; TuneDesk lowers its count by the CPU use it samples at start, "
    "other programs' only)"
)


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a figure: CPU, cores, torch threads, and how busy the machine was."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import psutil

        info["physical_cpus"] = psutil.cpu_count(logical=False)
        info["total_ram_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def torch_info() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/<name>-<UTC timestamp>.json, written to a temp name then renamed."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    body = {"benchmark": name, "utc": stamp, "machine": machine_info(), **payload}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """
    >>> print(markdown_table(["a", "b"], [[1, "x"]]))
    | a | b |
    |---|---|
    | 1 | x |
    """
    out = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def fmt_bytes(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ---- FLOPs of a LoRA training step ----------------------------------------------------------------------------
@dataclass
class Dims:
    """The numbers of a decoder-only model that set its FLOPs per token (read from config.json)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Dims:
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        return cls(
            layers=config["num_hidden_layers"],
            hidden=hidden,
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            intermediate=config["intermediate_size"],
            vocab=config["vocab_size"],
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> Dims:
        return cls.from_config(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each Linear in one Llama-style decoder layer (gated MLP)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}  # fmt: skip

    def decoder_linear_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())


def lora_train_flops(
    dims: Dims,
    input_tokens: int,
    label_tokens: int,
    sum_seq_len_sq: int,
    rank: int = 8,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    logits_on_labels_only: bool = True,
) -> dict[str, float]:
    """Model FLOPs of LoRA training over a set of sequences (forward + backward, frozen base), by part.

    A matmul of (T x a) by (a x b) costs 2*T*a*b FLOPs. For a frozen linear layer with N weights:
      forward 2*N*T, backward for the input gradient 2*N*T, NO weight gradient (frozen)  -> 4*N*T,
      where a fully trained layer costs 6*N*T (the usual 6*N*T rule counts the weight gradient too).
    LoRA A (in x r) and B (r x out) are trained: 6*r*(in+out)*T (0.3% of the base at r=8 on SmolLM2).
    Attention scores QK^T and AV: forward 2*2*L^2*d per layer and sequence (d = heads x head_dim, full L^2,
      not halved for the causal mask, the PaLM convention), backward twice that -> 12*layers*d*sum(L^2).
    lm_head (tied, frozen) V*h: 4*V*h per position that gets logits; only label positions when the trainer
      computes logits there only (TuneDesk), else every input position. Embedding lookups, norms, RoPE,
      SiLU and softmax are elementwise and left out (<1% here).
    Counts are of useful work: padding is not counted, so padding lowers the achieved ratio, as it should.
    Approximation: the input gradient of layer 0's frozen projections is not needed (embeddings are frozen)
    but is counted (1/layers of the linear backward, 1.7% on 30 layers).
    """
    shapes = dims.linear_shapes()
    linear = 4 * dims.decoder_linear_params() * input_tokens
    lora = 6 * rank * dims.layers * sum(sum(shapes[t]) for t in targets) * input_tokens
    attention = 12 * dims.layers * dims.heads * dims.head_dim * sum_seq_len_sq
    logit_positions = label_tokens if logits_on_labels_only else input_tokens
    lm_head = 4 * dims.vocab * dims.hidden * logit_positions
    parts = {"linear": linear, "lora": lora, "attention": attention, "lm_head": lm_head}
    parts["total"] = float(sum(parts.values()))
    return {k: float(v) for k, v in parts.items()}


def token_counts(examples: Iterable[Any]) -> dict[str, int]:
    """Counts over encoded examples (objects with input_ids and labels, -100 on the prompt).

    useful_tokens: label-bearing positions after the causal shift, sum of (labels[1:] != -100): exactly what
    a collator that pads labels with -100 and a shifted loss count over micro-batches, whatever the batching.
    """
    inputs = useful = sq = n = 0
    for ex in examples:
        length = len(ex.input_ids)
        inputs += length
        sq += length * length
        useful += sum(1 for lab in list(ex.labels)[1:] if lab != -100)
        n += 1
    return {"examples": n, "input_tokens": inputs, "useful_tokens": useful, "sum_seq_len_sq": sq}
