"""Loading a large dataset: wall time and peak memory of what the Data tab's Load reads and validates.

    .venv/bin/python -m bench.data_load                          # 1,000,000 lines (~55 MB) + one 36 MB record
    .venv/bin/python -m bench.data_load --before 2a08d89         # the same, old code first, side by side
    .venv/bin/python -m bench.data_load --tokenize               # + the Data tab's token statistics (after only)
    .venv/bin/python -m bench.data_load --quick                  # 100,000 lines: a smoke test

Files, written to a temp folder: `lines.jsonl`, N short Alpaca records one per line (`{"instruction":"12 the",
"input":"","output":"you"}`, ~55 bytes a line: 55.4 MB for 1,000,000), and `one_record.jsonl`, two small
records around one whose output is 36 MB of text (the record the issue reported at 11 GB).

Each figure comes from a fresh child process running `app.data.load_from_config(DataConfig(path=FILE))`, the core
function the Data tab's Load calls before it counts tokens (also behind `python -m app data inspect`): time of
that call, the child's high-water RSS (VmHWM) and its RSS after the imports, as ratios to the file size.
`--before REV` runs the same child against `git archive REV app` in a temp folder (the benchmark itself is this
checkout's). `--tokenize` adds a row for this checkout: the whole of Load on lines.jsonl, i.e. then also the token
statistics with the default model's tokenizer (`app.data.prepare_preview`; the tokenizer, torch and transformers
load before the clock starts and count in "imports"; before prepare_preview, Load tokenized every record: ~0.3 ms
each, 5 minutes for 1,000,000). Prints a markdown table; writes bench/results/data_load-<UTC time>.json
(gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, child_env, emit_json, markdown_table, run_main, tail, write_result

WORDS = "the a of to and in is it you that he was for on are with as his they be at one have this".split()
TARGET_SECONDS = 30.0
TARGET_RATIO = 4.0
BIG_RECORD_CHARS = 36_000_000


def write_lines(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            record = {
                "instruction": f"{i} {rng.choice(WORDS)}",
                "input": "",
                "output": rng.choice(WORDS),
            }
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")


def write_one_record(path: Path) -> None:
    small = [{"instruction": "Hi", "output": "Hello."}, {"instruction": "Bye", "output": "Goodbye."}]
    big = {"instruction": "Summarise this.", "output": "lorem ipsum " * (BIG_RECORD_CHARS // 12)}
    path.write_text("".join(json.dumps(r) + "\n" for r in (small[0], big, small[1])), encoding="utf-8")


# ---- child: one load in a fresh interpreter --------------------------------------------------------------------
def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """High-water RSS of this process image. VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child
    would report its parent's peak at the fork (~125 MiB after writing the files) when that is higher."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(path: str, tokenize: bool) -> dict[str, Any]:
    from app import data
    from app.config import DataConfig

    cfg = DataConfig(path=path)
    tok = _tokenizer() if tokenize else None
    base = rss_now()
    t0 = time.perf_counter()
    load = data.load_from_config(cfg)
    out = {"s": time.perf_counter() - t0, "base_rss": base, "peak_rss": peak_rss(), "records": load.records}
    out.update({"valid": load.records - load.skipped, "problems": [p.describe()[:160] for p in load.problems[:3]]})
    if tok is not None:
        t0 = time.perf_counter()
        prepared = data.prepare_preview(load, cfg, tok)
        out.update({"tokenize_s": time.perf_counter() - t0, "tokenize_peak_rss": peak_rss()})
        out["tokenized"] = len(prepared.stats.lengths)
    out["kept_rss"] = rss_now()
    return out


def _tokenizer() -> Any:
    from app.modeling import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m-instruct"))


def measure(path: Path, code: Path, tokenize: bool = False) -> dict[str, Any]:
    """One child with `code` (a checkout holding app/) first on sys.path; cwd is `code`, so `-m` finds its app."""
    cmd = [sys.executable, "-m", "bench.data_load", "--child", str(path)] + (["--tokenize"] if tokenize else [])
    env = child_env(PYTHONPATH=os.pathsep.join([str(code), str(ROOT)]))
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` in {code} exited {proc.returncode}: {tail(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def old_code(rev: str, folder: Path) -> Path:
    """`app/` of revision `rev`, extracted into folder/rev."""
    target = folder / rev
    target.mkdir()
    archive = subprocess.run(["git", "archive", rev, "app"], cwd=ROOT, capture_output=True, check=False)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


# ---- parent --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_load", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="records in lines.jsonl (default 1,000,000)")
    parser.add_argument("--before", metavar="REV", help="also measure app/ of this git revision (old code first)")
    parser.add_argument("--tokenize", action="store_true", help="also time Load's token statistics (after only)")
    parser.add_argument("--quick", action="store_true", help="100,000 lines: a smoke test")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        emit_json(child(args.child, args.tokenize))
        return 0
    with tempfile.TemporaryDirectory(prefix="tunedesk-bench-") as tmp:
        folder = Path(tmp)
        files = {"lines": folder / "lines.jsonl", "one_record": folder / "one_record.jsonl"}
        write_lines(files["lines"], 100_000 if args.quick else args.lines)
        write_one_record(files["one_record"])
        codes = {"before": old_code(args.before, folder), "after": ROOT} if args.before else {"after": ROOT}
        runs = {f"{side}/{name}": measure(path, code) for name, path in files.items() for side, code in codes.items()}
        if args.tokenize:
            runs["after + tokens/lines"] = measure(files["lines"], ROOT, tokenize=True)
        sizes = {name: path.stat().st_size for name, path in files.items()}
    print(table(runs, sizes, args.before))
    print(f"\nload average (1/5/15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    saved = write_result("data_load", {"before": args.before, "sizes": sizes, "runs": runs})
    print(f"written {saved.relative_to(ROOT)}")
    return 0


def table(runs: dict[str, dict], sizes: dict[str, int], before: str | None) -> str:
    rows = []
    for key, r in runs.items():
        side, name = key.split("/")
        size = sizes[name]
        seconds = f"{r['s']:.1f}" + (f" + {r['tokenize_s']:.1f} tokens" if "tokenize_s" in r else "")
        peak = max(r["peak_rss"], r.get("tokenize_peak_rss", 0))
        rows.append(
            [
                f"{name} ({size / 1e6:.1f} MB)",
                f"{side} ({before})" if side == "before" else side,
                seconds,
                f"{peak / 2**20:,.0f} MiB",
                f"{peak / size:.1f}x",
                f"{(peak - r['base_rss']) / size:.1f}x",
                f"{r['kept_rss'] / 2**20:,.0f} MiB",
                f"{r['valid']:,} / {r['records']:,}",
            ]
        )
    headers = ["file", "code", "load s", "peak RSS", "peak / file", "(peak - imports) / file", "RSS after", "valid"]
    goal = f"target: < {TARGET_SECONDS:.0f} s and peak < {TARGET_RATIO:.0f}x the file size"
    return f"\nload_from_config, fresh process each ({goal})\n\n" + markdown_table(headers, rows)


if __name__ == "__main__":
    sys.exit(run_main(main))
