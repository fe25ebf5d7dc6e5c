"""Training throughput: TuneDesk's `app.train.run()` against a plain Transformers `Trainer` + PEFT script, in one
run, on the same model, data, token sequences, hyperparameters and number of steps.

Both train LoRA r8 alpha16 dropout 0.05 on q_proj/v_proj of the default model (SmolLM2-135M-Instruct, fp32 on the
CPU), on the first --records records of alpaca_en_demo.json rendered with the Alpaca template by
`app.data.prepare` (so both see identical token sequences, loss on the response only, max_seq_len 512), batch 4,
grad_accum 1, lr 2e-4 constant (no warm-up), AdamW, grad clip 1.0, no gradient checkpointing, seed 42.

The baseline is what a user would write: `get_peft_model`, `DataCollatorForSeq2Seq` padding each batch to its
longest example (labels padded with -100), a random order, and the model's own loss over full logits.
TuneDesk groups examples by length (or packs them with --packing) and computes logits only at label positions.

What is measured, identically on both sides (each run in its own subprocess, so peak RSS is its own):
  useful tokens  = label-bearing positions after the causal shift, sum of (labels[:, 1:] != -100) over the
                   micro-batches actually trained (TuneDesk: its own counter in compute_loss, from its events:
                   `label_tokens_per_epoch` of `started` when the run is exactly one epoch, else
                   label_tokens_per_s x train_s of `finished`; baseline: the same count in a compute_loss override)
  step seconds   = sum over optimizer steps of on_step_begin -> on_step_end (forward, backward, clip,
                   optimizer and scheduler step). Excludes model load, tokenisation, collation of the next
                   batch, evaluation and saving. TuneDesk: `train_s` of its `finished` event (EventsCallback);
                   baseline: a callback measuring the same way.
  wall seconds   = on_train_begin -> the last step's log (adds batch collation and Trainer overhead); TuneDesk:
                   `elapsed_s` of its last `log` event; baseline: the same from its callback.
  tokens/s       = useful tokens / step seconds (headline), and / wall seconds.
  peak RSS       = ru_maxrss of the child right after training (before the held-in loss pass).
  losses         = the last logged step loss, the mean of logged step losses, and (first repeat only) the
                   token-weighted mean loss of the trained model over ALL label tokens of the N records, the same
                   tokens for both: the check that the faster path learns as well.
Runs are interleaved A B A B (--repeats 2) and medians quoted. `--arms tunedesk tunedesk-whole baseline` adds
TuneDesk with its CPU chunking off (each micro-batch in one forward, as before app.accel.CPU_CHUNK_TOKENS): the
before / after of that change in the same run.

    python -m bench.train_throughput                  # 128 records, 32 steps (one epoch), 2 repeats
    python -m bench.train_throughput --quick          # 16 records, 4 steps, 1 repeat
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/train_throughput.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402

IMPLS = ("tunedesk", "baseline", "tunedesk-whole")
"""tunedesk-whole: TuneDesk with its CPU chunking off (app.accel.CPU_CHUNK_TOKENS 0), each micro-batch in one forward
as before that change: the before arm of the chunking A/B."""
ARMS = ("tunedesk", "baseline")
NAMES = {"tunedesk": "TuneDesk", "baseline": "Trainer+PEFT baseline", "tunedesk-whole": "TuneDesk, whole batches"}
COMPARE = (("tunedesk", "baseline"), ("tunedesk-whole", "baseline"), ("tunedesk", "tunedesk-whole"))
BATCH, LR, SEED, MAX_LEN = 4, 2.0e-4, 42, 512
LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


# ---- the shared setting -------------------------------------------------------------------------------------
def data_config(args: argparse.Namespace) -> Any:
    from app.config import DataConfig

    # val_size 0 (default): every one of the N records is trained on, by both. With --val-size both train on the
    # same train split of app.data's deterministic split, and the held-out records are trained by neither.
    return DataConfig(path=str(args.data), template="alpaca", max_seq_len=MAX_LEN, max_samples=args.records,
                      val_size=args.val_size)  # fmt: skip


def tunedesk_config(args: argparse.Namespace, output_dir: str) -> Any:
    from app.config import RunConfig

    d = data_config(args)
    changes = {
        "method": "lora",
        **{f"lora.{k}": v for k, v in LORA.items()},
        **{f"data.{k}": getattr(d, k) for k in ("path", "template", "max_seq_len", "max_samples", "val_size")},
        "train.batch_size": BATCH,
        "train.grad_accum": 1,
        "train.learning_rate": LR,
        "train.lr_scheduler": "constant",
        "train.warmup_ratio": 0.0,
        "train.optimizer": "adamw_torch",
        "train.weight_decay": 0.0,
        "train.max_grad_norm": 1.0,
        "train.gradient_checkpointing": False,
        "train.precision": "fp32",
        "train.device": "cpu",
        "train.seed": SEED,
        "train.max_steps": args.steps,
        "train.packing": args.packing,
        "train.save_steps": 0,
        "train.logging_steps": 1,
        "train.sample_every": 0,
        "train.output_dir": output_dir,
    }
    return RunConfig().replace(**changes).check(source="bench.train_throughput")


def load_base(tokenizer_only: bool = False) -> tuple[Any, Any, float]:
    """(model, tokenizer, seconds): the default model, fp32, SDPA attention, as a plain script loads it."""
    import torch
    from transformers import AutoModelForCausalLM

    from app.modeling import ensure_default_model, load_tokenizer

    start = time.perf_counter()
    path = str(ensure_default_model())
    tokenizer = load_tokenizer(path)
    model = None
    if not tokenizer_only:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    return model, tokenizer, time.perf_counter() - start


def heldin_loss(model: Any, examples: list[Any], pad_id: int, batch: int = BATCH) -> float:
    """Token-weighted mean cross-entropy over every label token of `examples` (no grad, eval mode, sorted by
    length so padding is small). The same tokens for both implementations."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    order = sorted(examples, key=lambda e: -len(e.input_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.full((len(chunk), width), pad_id)
            labels = torch.full((len(chunk), width), -100)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, e in enumerate(chunk):
                n = len(e.input_ids)
                ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(e.input_ids), torch.tensor(e.labels), 1
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum").item()
            count += int((target != -100).sum())
    return total / max(count, 1)


# ---- child: TuneDesk ------------------------------------------------------------------------------------------
def child_tunedesk(args: argparse.Namespace) -> dict[str, Any]:
    from app import accel, history, runs, train

    if args.child == "tunedesk-whole":
        accel.CPU_CHUNK_TOKENS = 0  # what accel.chunk_tokens reads when the trainer is built
    elif args.chunk_tokens is not None:
        accel.CPU_CHUNK_TOKENS = args.chunk_tokens

    with tempfile.TemporaryDirectory(prefix="tunedesk-bench-") as tmp:
        cfg = tunedesk_config(args, tmp)
        run_dir = runs.create_run(cfg, "bench")
        start = time.perf_counter()
        status = train.run(cfg, run_dir)
        run_wall = time.perf_counter() - start
        rss = common.peak_rss_bytes()
        events = history.load_events(run_dir)
        end = events[-1] if events else {}
        if status != "finished":
            raise common.BenchError(f"TuneDesk run ended {status}: {end.get('message')}")
        started = next(e for e in events if e["type"] == "started")
        logs = [e for e in events if e["type"] == "log"]
        train_s = float(end["train_s"])
        useful = round(float(end["label_tokens_per_s"]) * train_s)  # its labels_seen, back from a rate rounded to 0.1
        if not args.packing and end["step"] == math.ceil(started["train_rows"] / BATCH):
            useful = int(started["label_tokens_per_epoch"])  # exactly one epoch: its exact count of the same tokens
        result = {
            "impl": args.child,
            "steps": end["step"],
            "useful_tokens": useful,
            "step_s": train_s,
            "wall_s": float(logs[-1]["elapsed_s"]),
            "run_call_s": run_wall,
            "peak_rss_bytes": rss,
            "threads": started.get("threads"),
            "final_loss": logs[-1]["loss"],
            "mean_logged_loss": sum(e["loss"] for e in logs) / len(logs),
            "epoch_facts": {
                k: started.get(k)
                for k in ("train_examples", "train_rows", "tokens_per_epoch", "label_tokens_per_epoch", "truncated")
            },  # fmt: skip
        }
        if args.heldin:
            result["heldin_loss"] = _tunedesk_heldin(args, Path(end["adapter"]))
    return result


def _tunedesk_heldin(args: argparse.Namespace, adapter: Path) -> float:
    from peft import PeftModel

    from app.data import prepare

    model, tokenizer, _ = load_base()
    model = PeftModel.from_pretrained(model, str(adapter))
    examples = prepare(data_config(args), tokenizer).train
    return heldin_loss(model, examples, tokenizer.pad_token_id)


# ---- child: the plain baseline --------------------------------------------------------------------------------
def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments, set_seed

    from app.data import prepare

    class Clock(TrainerCallback):
        """Times exactly what TuneDesk's EventsCallback times: on_step_begin -> on_step_end, summed."""

        def __init__(self) -> None:
            self.train_s, self.t_begin, self.t_step, self.losses, self.wall_s = 0.0, 0.0, 0.0, [], 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.t_begin = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            self.t_step = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.train_s += time.perf_counter() - self.t_step

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])
                self.wall_s = time.perf_counter() - self.t_begin

    class CountingTrainer(Trainer):
        """A plain Trainer that also counts label tokens the way TuneDesk does (instrumentation only)."""

        useful = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.useful += int((inputs["labels"][:, 1:] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    set_seed(SEED)
    model, tokenizer, _ = load_base()
    examples = prepare(data_config(args), tokenizer).train
    features = [{"input_ids": list(e.input_ids), "attention_mask": [1] * len(e.input_ids), "labels": list(e.labels)}
                for e in examples]  # fmt: skip
    lora = LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="baseline-bench-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
            max_steps=args.steps, logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none",
            seed=SEED, use_cpu=True, gradient_checkpointing=False, dataloader_num_workers=0,
            dataloader_pin_memory=False, remove_unused_columns=False, disable_tqdm=True,
        )  # fmt: skip
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        trainer = CountingTrainer(model=model, args=targs, train_dataset=features, data_collator=collator,
                                  callbacks=[clock])  # fmt: skip
        trainer.train()
    rss = common.peak_rss_bytes()
    result = {
        "impl": "baseline",
        "steps": trainer.state.global_step,
        "useful_tokens": trainer.useful,
        "step_s": clock.train_s,
        "wall_s": clock.wall_s,
        "peak_rss_bytes": rss,
        "threads": torch.get_num_threads(),
        "final_loss": clock.losses[-1],
        "mean_logged_loss": sum(clock.losses) / len(clock.losses),
    }
    if args.heldin:
        result["heldin_loss"] = heldin_loss(model, examples, tokenizer.pad_token_id)
    return result


# ---- parent ---------------------------------------------------------------------------------------------------
def child_argv(args: argparse.Namespace, impl: str, heldin: bool) -> list[str]:
    argv = ["bench.train_throughput", "--child", impl, "--records", str(args.records), "--steps", str(args.steps),
            "--data", str(args.data), "--val-size", str(args.val_size)]  # fmt: skip
    if args.chunk_tokens is not None:
        argv += ["--chunk-tokens", str(args.chunk_tokens)]
    return argv + (["--packing"] if args.packing else []) + ([] if heldin else ["--no-heldin"])


def add_rates(r: dict[str, Any]) -> dict[str, Any]:
    r["useful_tokens_per_s"] = r["useful_tokens"] / r["step_s"] if r["step_s"] else None
    r["useful_tokens_per_wall_s"] = r["useful_tokens"] / r["wall_s"] if r["wall_s"] else None
    return r


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    arms = [impl for impl in IMPLS if any(r["impl"] == impl for r in results)]
    for impl in arms:
        rs = [r for r in results if r["impl"] == impl]
        keys = ("useful_tokens_per_s", "useful_tokens_per_wall_s", "peak_rss_bytes", "final_loss",
                "mean_logged_loss", "useful_tokens", "step_s", "wall_s", "steps", "threads", "run_call_s")  # fmt: skip
        out[impl] = {k: common.median(r.get(k) for r in rs) for k in keys}
        out[impl]["heldin_loss"] = next((r["heldin_loss"] for r in rs if "heldin_loss" in r), None)
    out["ratios"] = {}
    for a, b in COMPARE:
        if a in out and b in out:
            x, y = out[a], out[b]
            out["ratios"][f"{a}/{b}"] = {
                "useful_tokens_per_s": _ratio(x["useful_tokens_per_s"], y["useful_tokens_per_s"]),
                "useful_tokens_per_wall_s": _ratio(x["useful_tokens_per_wall_s"], y["useful_tokens_per_wall_s"]),
                "peak_rss": _ratio(x["peak_rss_bytes"], y["peak_rss_bytes"]),
                "pairs_useful_tokens_per_s": _pair_ratios(results, a, b),
            }
    out["ratio"] = out["ratios"].get("tunedesk/baseline")
    return out


def _pair_ratios(results: list[dict[str, Any]], a: str, b: str) -> list[float | None]:
    """Tokens/s of arm a over arm b within each repeat (runs interleaved in the same minutes)."""
    xs = [r["useful_tokens_per_s"] for r in results if r["impl"] == a]
    ys = [r["useful_tokens_per_s"] for r in results if r["impl"] == b]
    return [_ratio(x, y) for x, y in zip(xs, ys, strict=False)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(s: dict[str, Any], args: argparse.Namespace) -> str:
    arms = [a for a in IMPLS if a in s]
    pairs = list(s["ratios"])

    def row(label: str, key: str, fmt=lambda v: v, ratio_key: str | None = None) -> list[Any]:
        ratios = [s["ratios"][p][ratio_key] if ratio_key else None for p in pairs]
        cells = [fmt(s[a][key]) if s[a][key] is not None else "" for a in arms]
        return [label, *cells, *(f"{r:.2f}x" if r is not None else "" for r in ratios)]

    rows = [
        row("useful tokens/s (step time)", "useful_tokens_per_s", ratio_key="useful_tokens_per_s"),
        row("useful tokens/s (wall)", "useful_tokens_per_wall_s", ratio_key="useful_tokens_per_wall_s"),
        row("peak RSS", "peak_rss_bytes", common.fmt_bytes, "peak_rss"),
        row("useful tokens trained", "useful_tokens"),
        row("optimizer steps", "steps"),
        row("final step loss", "final_loss"),
        row("mean logged step loss", "mean_logged_loss"),
        row("held-in loss, all label tokens of the N records", "heldin_loss"),
        row("torch threads", "threads"),
        row("seconds in app.train.run (TuneDesk: load, data, steps, checks, save)", "run_call_s"),
    ]
    title = (f"Training throughput: {args.records} records, {args.steps} steps, batch {BATCH}, "
             f"median of {args.repeats}{', packing' if args.packing else ''}")  # fmt: skip
    header = ["", *(NAMES[a] for a in arms), *pairs]
    return title + "\n\n" + common.markdown_table(header, rows)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=128, help="first N records of the data (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps for both (default: one epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs; medians are quoted (default 2)")
    parser.add_argument("--data", type=Path, default=common.ALPACA_EN)
    parser.add_argument("--packing", action="store_true", help="TuneDesk packs examples instead of grouping")
    parser.add_argument("--val-size", type=float, default=0.0, help="share held out of training, for both (0)")
    parser.add_argument("--no-heldin", dest="heldin", action="store_false",
                        help="skip the held-in loss pass after training")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="16 records, 4 steps, 1 repeat (smoke test)")
    arms_help = ("what runs, interleaved in this order each repeat (default: tunedesk baseline); tunedesk-whole is "
                 "TuneDesk without its CPU chunking, the before arm of that change")  # fmt: skip
    parser.add_argument("--arms", nargs="+", choices=IMPLS, default=list(ARMS), help=arms_help)
    chunk_help = "the tunedesk arm's CPU chunk size in padded tokens (default: app.accel.CPU_CHUNK_TOKENS)"
    parser.add_argument("--chunk-tokens", type=int, default=None, help=chunk_help)
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per child run")
    parser.add_argument("--threads", type=common.threads_arg, default="cores", help=common.THREADS_HELP)
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.steps, args.repeats = 16, args.steps or 4, 1
    args.steps = args.steps or math.ceil(args.records / BATCH)
    if args.chunk_tokens is not None and args.chunk_tokens < 0:
        parser.error("--chunk-tokens must be 0 (whole batches) or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        payload = child_baseline(args) if args.child == "baseline" else child_tunedesk(args)
        common.emit_json(payload)
        return 0
    common.require("app.train", "run")
    common.require("app.data", "prepare")
    common.require("app.runs", "create_run")
    common.require("app.history", "load_events")
    if not args.data.is_file():
        raise common.Skip(f"{args.data} is absent (the real Alpaca data lives in ../shared/data); pass --data FILE")
    results = []
    for rep in range(args.repeats):
        for impl in args.arms:  # interleaved A B A B: a burst of load on the machine hits both alike
            print(f"[train_throughput] repeat {rep + 1}/{args.repeats}: {impl}", file=sys.stderr, flush=True)
            argv = child_argv(args, impl, args.heldin and rep == 0)
            child = common.run_json_child(argv, args.timeout, impl, args.threads)
            results.append(add_rates(child))
    summary = summarise(results)
    path = common.write_result("train_throughput", {"settings": _settings(args), "summary": summary,
                                                    "runs": results})  # fmt: skip
    print(render(summary, args))
    print(f"\nresult: {path}")
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"records": args.records, "steps": args.steps, "repeats": args.repeats, "data": str(args.data),
            "val_size": args.val_size, "chunk_tokens": args.chunk_tokens,
            "packing": args.packing, "batch_size": BATCH, "grad_accum": 1, "learning_rate": LR,
            "lr_scheduler": "constant", "max_seq_len": MAX_LEN, "seed": SEED, "lora": LORA, "dtype": "float32",
            "device": "cpu", "gradient_checkpointing": False, "threads": args.threads or "auto"}  # fmt: skip


if __name__ == "__main__":
    sys.exit(common.run_main(main))
