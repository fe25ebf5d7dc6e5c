"""Cold start: seconds from `python -m app ui --no-browser --port P` to HTTP 200 on `/` (target < 8 s), and
seconds to load the cached default model in a fresh process (target < 3 s); medians of --repeats runs.

A third pass runs the UI once under `python -X importtime` and lists the heaviest top-level imports and the
chain that pulled in each heavy library (torch, transformers, ...), so a slow start points at its cause.

    python -m bench.cold_start            # 3 repeats
    python -m bench.cold_start --quick    # 1 repeat, for a smoke test
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/cold_start.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "pandas", "plotly", "numpy",
         "gradio", "gguf", "safetensors", "huggingface_hub", "sklearn", "scipy", "matplotlib")  # fmt: skip
"""Libraries whose import alone can cost a second or more; the report says who imported each one."""

LOAD_SNIPPET = """
import json, time
t0 = time.perf_counter()
from app.config import ModelConfig
from app.modeling import load_model
t1 = time.perf_counter()
loaded = load_model(ModelConfig(), device="cpu", precision="fp32", progress=lambda f, m: None)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "load_model_own_s": loaded.load_s,
                  "path": loaded.path, "dtype": loaded.dtype}))
"""


def ui_start_once(timeout: float, importtime: bool = False) -> tuple[float, str]:
    """Seconds from Popen to 200 on `/`, and the child's stderr (the -X importtime log when asked)."""
    port = common.free_port()
    flags = ["-X", "importtime"] if importtime else []
    cmd = [sys.executable, *flags, "-m", "app", "ui", "--no-browser", "--port", str(port)]
    # stderr goes to a file, not a pipe: the importtime log is ~300 KB and would fill a 64 KB pipe and stall.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=common.ROOT, env=common.child_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            # Gradio serves `/` only once launch() has built every tab, so 200 means the page is usable.
            common.wait_http_ok(f"http://127.0.0.1:{port}/", timeout, proc)
            elapsed = time.perf_counter() - start
        except common.BenchError as exc:
            common.stop_process(proc)
            err.seek(0)
            raise common.BenchError(f"{exc}; its stderr ends:\n{common.tail(err.read())}") from None
        finally:
            common.stop_process(proc)
        err.seek(0)
        return elapsed, err.read()


def model_load_once(timeout: float) -> dict[str, float]:
    cmd = [sys.executable, "-c", LOAD_SNIPPET]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, env=common.child_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise common.BenchError(f"loading the default model failed; its stderr ends:\n{common.tail(proc.stderr)}")
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = total
    return result


# ---- -X importtime analysis ----------------------------------------------------------------------------------
def parse_importtime(stderr: str) -> list[tuple[int, int, int, str]]:
    """(depth, self_us, cumulative_us, module) per line of `-X importtime` output, in the order printed.

    >>> parse_importtime("import time:       10 |         30 | json\\nimport time: 5 | 5 |   json.decoder")
    [(0, 10, 30, 'json'), (1, 5, 5, 'json.decoder')]
    """
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        self_us, cum_us, name_field = parts
        depth = (len(name_field) - len(name_field.lstrip(" ")) - 1) // 2
        rows.append((depth, int(self_us), int(cum_us), name_field.strip()))
    return rows


def importers(rows: list[tuple[int, int, int, str]], module: str) -> list[str]:
    """The chain of modules that imported `module` first, outermost first (importtime prints children before
    their parent, one level deeper, so the parent is the next line with a smaller depth)."""
    for i, (depth, _, _, name) in enumerate(rows):
        if name != module:
            continue
        chain, want = [], depth - 1
        for d, _, _, parent in rows[i + 1 :]:
            if d == want:
                chain.append(parent)
                want -= 1
            if want < 0:
                break
        return list(reversed(chain))
    return []


def import_report(stderr: str, top: int = 12) -> dict[str, object]:
    rows = parse_importtime(stderr)
    top_level = sorted((r for r in rows if r[0] == 0), key=lambda r: -r[2])[:top]
    heavy = []
    for name in HEAVY:
        hit = next((r for r in rows if r[3] == name), None)
        if hit is not None:
            heavy.append({"module": name, "cumulative_s": hit[2] / 1e6, "imported_via": importers(rows, name)})
    heavy.sort(key=lambda h: -h["cumulative_s"])
    total = sum(r[1] for r in rows) / 1e6
    return {
        "total_import_s": total,
        "top_level": [{"module": r[3], "cumulative_s": r[2] / 1e6} for r in top_level],
        "heavy": heavy,
    }


# ---- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one start")
    parser.add_argument("--quick", action="store_true", help="1 repeat (smoke test)")
    parser.add_argument("--no-importtime", action="store_true", help="skip the -X importtime analysis")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    common.require("app.ui.app", "main")
    common.require("app.modeling", "load_model")

    ui_s, loads = [], []
    for i in range(repeats):  # interleaved so a burst of load on the machine hits both alike
        ui_s.append(ui_start_once(args.timeout)[0])
        loads.append(model_load_once(args.timeout))
        print(f"[cold_start] run {i + 1}/{repeats}: ui {ui_s[-1]:.2f} s, model load {loads[-1]['load_s']:.2f} s "
              f"(+{loads[-1]['import_s']:.2f} s imports)", file=sys.stderr, flush=True)  # fmt: skip
    report = None
    if not args.no_importtime:
        try:
            report = import_report(ui_start_once(args.timeout * 2, importtime=True)[1])
        except common.BenchError as exc:  # the analysis is a diagnosis; keep the measured figures
            print(f"[cold_start] -X importtime pass failed: {common.tail(str(exc), 3)}", file=sys.stderr)

    result = {
        "repeats": repeats,
        "ui_to_http_200_s": ui_s,
        "ui_median_s": common.median(ui_s),
        "model_load": loads,
        "model_load_median_s": common.median(x["load_s"] for x in loads),
        "model_import_median_s": common.median(x["import_s"] for x in loads),
        "model_process_median_s": common.median(x["process_s"] for x in loads),
        "importtime": report,
    }
    path = common.write_result("cold_start", result)
    print(render(result))
    print(f"\nresult: {path}")
    return 0


def _chain(via: list[str]) -> str:
    """Outermost importer and direct importer: 'app.ui.model_tab > ... > transformers.trainer'."""
    if not via:
        return "(top level)"
    return " > ".join(via) if len(via) <= 3 else f"{via[0]} > {via[1]} > ... > {via[-1]}"


def render(r: dict) -> str:
    rows = [
        ["UI: process start -> HTTP 200 on /", r["ui_median_s"], "< 8 s"],
        ["default model load (cached, fp32 CPU), load_model() only", r["model_load_median_s"], "< 3 s"],
        ["  + imports (app.modeling: torch, transformers)", r["model_import_median_s"], ""],
        ["  whole process (interpreter + imports + load)", r["model_process_median_s"], ""],
    ]
    out = [common.markdown_table([f"Cold start (median of {r['repeats']})", "seconds", "target"], rows)]
    rep = r.get("importtime")
    if rep:
        out.append(f"\nUI imports under -X importtime: {rep['total_import_s']:.2f} s in all (slower than a plain run)")
        out.append(common.markdown_table(["heavy library", "cumulative s", "first imported via"],
                                         [[h["module"], h["cumulative_s"], _chain(h["imported_via"])]
                                          for h in rep["heavy"]]))  # fmt: skip
        top = [[t["module"], t["cumulative_s"]] for t in rep["top_level"]]
        out.append("\n" + common.markdown_table(["top-level import", "cumulative s"], top))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(common.run_main(main))
