"""Data tab latency: page one of a 100k-record file, a full validation pass, and tokenizing 1000 records.

    .venv/bin/python -m bench.data_preview            # 100k records, 3 repeats per figure
    .venv/bin/python -m bench.data_preview --quick    # 5k records, 1 repeat (smoke test; figures mean nothing)

Every figure is taken in a fresh interpreter (no warm lru cache, no imported modules carried over), so "page
one" includes what a user waits for after pressing Load in a new session, minus the import of app.data, which is
reported on its own. The OS file cache is warm (the file was just written), as it is after an upload.

Measured per file type (JSONL, JSON list, CSV, Parquet):
- import: `import pandas` + `import app.data` (no torch, no transformers; the UI has pandas loaded already);
- page 1 / last page: `app.data.preview(path, page, 20)`, the raw rows shown in the Records table plus the total;
- load all: `app.data.load_examples(path)`, every record validated (what Load / validate does before tokenizing).
Then `app.data.prepare` of a 1000-record file with the default model's tokenizer (load + validate + render +
tokenize + labels + split; the tokenizer load is not counted).

Prints markdown tables; writes every run to bench/results/data_preview-<UTC time>.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
WORDS = (
    "the model learns to answer short questions about science history cooking travel music sport code "
    "numbers colours animals weather cities rivers books films health money time language"
).split()
CHINESE = "我们今天学习新的知识请回答这个问题天气很好城市河流书籍电影健康时间语言"


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Alpaca records of varied length: ~40% with input, ~15% Chinese; about 150 bytes each on average."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if rng.random() < 0.15:
            text = "".join(rng.choice(CHINESE) for _ in range(rng.randint(8, 60)))
            out.append({"instruction": f"问题 {i}：{text[:12]}？", "input": "", "output": text})
            continue
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
        given = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) if rng.random() < 0.4 else ""
        out.append({"instruction": f"Task {i}: {' '.join(words[:6])}?", "input": given, "output": " ".join(words)})
    return out


def write_files(records: list[dict], folder: Path) -> dict[str, Path]:
    import pandas as pd

    paths = {k: folder / f"data.{k}" for k in ("jsonl", "json", "csv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    paths["json"].write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    frame = pd.DataFrame(records)
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"])
    return paths


# ---- child: one measurement in a fresh interpreter ----------------------------------------------------------
def child(what: str, path: str, page: int) -> dict:
    t0 = time.perf_counter()
    import pandas  # noqa: F401 - the UI process has it loaded already (gradio imports it)

    from app import data

    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    if what == "preview":
        frame, total = data.preview(path, page, 20)
        result = {"rows": len(frame), "total": total}
    elif what == "load":
        res = data.load_examples(path)
        result = {"rows": len(res.examples), "total": res.records}
    else:  # prepare: load + render + tokenize + labels + split of a 1000-record file
        from app.config import DataConfig
        from app.modeling import load_tokenizer, resolve_model

        tok = load_tokenizer(resolve_model("smollm2-135m-instruct"))
        t0 = time.perf_counter()
        prepared = data.prepare(DataConfig(path=path), tok)
        s = prepared.stats
        result = {"rows": s.train_count + s.val_count, "total": s.total_tokens, "template": prepared.template}
    return {"import_s": imported, "s": time.perf_counter() - t0, **result}


def measure(what: str, path: Path, page: int = 0) -> dict:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bench.data_preview", "--child", what, "--path", str(path), "--page", str(page)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `{' '.join(cmd)}` failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data_preview", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5k records, 1 repeat: a smoke test")
    parser.add_argument("--child", choices=["preview", "load", "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--page", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.path, args.page)))
        return 0
    n, repeats = (5000, 1) if args.quick else (args.records, args.repeats)
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="tunedesk-bench-") as tmp:
        records = make_records(n)
        paths = write_files(records, Path(tmp))
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        small = Path(tmp) / "first1000.jsonl"
        small.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[:1000]), encoding="utf-8")
        last = (n - 1) // 20
        for _ in range(repeats):  # interleaved, so a burst of load on the machine hits every row alike
            for kind, path in paths.items():
                runs.setdefault(f"{kind}/page1", []).append(measure("preview", path, 0))
                runs.setdefault(f"{kind}/last", []).append(measure("preview", path, last))
                runs.setdefault(f"{kind}/load", []).append(measure("load", path))
            runs.setdefault("prepare", []).append(measure("prepare", small))
    print_tables(runs, sizes, n)
    save(runs, sizes, n, repeats)
    return 0


def print_tables(runs: dict[str, list], sizes: dict[str, int], n: int) -> None:
    print(f"\nPreview and validation of {n:,} generated Alpaca records (median seconds, fresh interpreter each)\n")
    print("| file | size | import app.data + pandas | page 1 | last page | load + validate all |")
    print("|---|---|---|---|---|---|")
    for kind, size in sizes.items():
        imp = median_of(runs[f"{kind}/page1"], "import_s")
        cells = [median_of(runs[f"{kind}/{k}"], "s") for k in ("page1", "last", "load")]
        print(f"| {kind} | {size / 1e6:.1f} MB | {imp:.2f} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    prep = runs["prepare"]
    print(
        f"\nprepare() of {prep[0]['rows']} records ({prep[0]['total']:,} tokens, {prep[0]['template']} template, "
        f"default tokenizer): {median_of(prep, 's'):.2f} s median (tokenizer load excluded)"
    )
    print(f"load average (1/5/15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def save(runs: dict[str, list], sizes: dict[str, int], n: int, repeats: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = RESULTS / f"data_preview-{stamp}.json"
    body = {
        "benchmark": "data_preview",
        "utc": stamp,
        "records": n,
        "repeats": repeats,
        "sizes": sizes,
        "runs": runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_1_5_15": os.getloadavg()},
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
    tmp.replace(path)
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
