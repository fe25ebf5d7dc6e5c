"""Evaluation end to end on the tiny model: a real PEFT adapter (LoRA B weights perturbed so it differs from the
base), the run's validation split, the table with deltas, the per-example frame, the figure, the saved files,
cancellation, the CLI, and the efficiency report. The slow test trains a real adapter on identity data."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import IDENTITY_HOLDOUT, IDENTITY_NAMES
from test_train_kit import tiny_config, write_alpaca

from app import adapters, efficiency, eval_data, eval_report, evaluate, history, runs
from app.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def write_sums(path: Path, n: int = 12) -> Path:
    records = [
        {"instruction": f"What is {i} plus {i}?", "input": "", "output": f"The answer is {2 * i}."} for i in range(n)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def make_adapter(base_dir: Path, out_dir: Path, seed: int = 1, std: float = 1.0) -> Path:
    """A LoRA adapter saved with save_pretrained; B is random (PEFT starts it at 0, which would equal the base)."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)  # lora_A's initialisation draws from the global generator
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    )
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * std
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A run folder (config.yaml: tiny model, 12 sums, val_size 0.25 -> 3 held out) with an adapter/."""
    root = tmp_path_factory.mktemp("eval")
    cfg = RunConfig(
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        data=DataConfig(path=str(write_sums(root / "sums.json")), val_size=0.25),
        train=TrainConfig(output_dir=str(root / "runs")),
    )
    run = runs.create_run(cfg, "eval-test")
    make_adapter(tiny_model_dir, run / runs.ADAPTER)
    return run


def test_before_and_after_on_the_validation_split(tiny_run, tiny_model_dir):
    from app import data, modeling

    report = evaluate.evaluate(None, [str(tiny_run / "adapter")], max_new_tokens=8)
    table = report.table
    assert list(table["model"]) == ["base", tiny_run.name]
    assert not report.cancelled and report.n_examples == 3 and list(table["n_examples"]) == [3, 3]
    # the same 3 records the trainer holds out: app.data.prepare's seeded split
    tok = modeling.load_tokenizer(str(tiny_model_dir))
    val = data.prepare(runs.load_config(tiny_run).data, tok).val
    assert list(report.examples["index"]) == [v.index for v in val]
    assert list(report.examples["reference"]) == [f"The answer is {2 * v.index}." for v in val]
    # deltas: 0 for the base, row - base for the adapter; the perturbed adapter really changes the model
    for m in eval_report.METRICS:
        assert table.loc[0, f"delta_{m}"] == 0
        assert table.loc[1, f"delta_{m}"] == pytest.approx(table.loc[1, m] - table.loc[0, m])
    assert abs(table.loc[1, "delta_loss"]) > 0.01
    assert table["perplexity"].tolist() == pytest.approx([math.exp(v) for v in table["loss"]])
    for m in ("rouge1", "rouge2", "rougeL", "bleu", "exact_match"):
        assert ((table[m] >= 0) & (table[m] <= 100)).all()
    ex = report.examples
    for col in ("base answer", "base rougeL", "base loss", f"{tiny_run.name} answer", f"{tiny_run.name} rougeL"):
        assert col in ex.columns and len(ex[col]) == 3
    assert list(ex["base answer"]) != list(ex[f"{tiny_run.name} answer"])
    # the table's loss is the token-weighted mean of the per-example losses, not their plain mean
    assert ex["base loss"].mean() != table.loc[0, "loss"] or len(set(ex["base loss"])) == 1

    fig = report.figure()
    assert [t.name for t in fig.data] == ["base", "base", tiny_run.name, tiny_run.name]
    assert list(fig.data[0].x) == ["ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU", "Exact match"]

    saved = report.saved_to
    assert saved is not None and saved.parent == tiny_run / "eval"
    assert sorted(p.name for p in saved.iterdir()) == ["examples.csv", "metrics.json", "summary.csv"]
    meta = json.loads((saved / "metrics.json").read_text(encoding="utf-8"))
    assert meta["n_examples"] == 3 and meta["cancelled"] is False and meta["split"].startswith("validation")
    assert len(pd.read_csv(saved / "summary.csv", encoding="utf-8-sig")) == 2
    assert len(pd.read_csv(saved / "examples.csv", encoding="utf-8-sig")) == 3
    assert not list((tiny_run / "eval").glob(".tmp-*")), "the temp folder must be renamed away"

    listed = eval_report.list_evaluations(tiny_run)
    assert listed[0]["path"] == saved and listed[0]["models"] == ["base", tiny_run.name]
    again = eval_report.load_evaluation(saved)
    assert again.table["loss"].tolist() == pytest.approx(table["loss"].tolist())
    assert list(again.examples["base answer"].astype(str)) == [str(a) for a in ex["base answer"]]


def test_base_row_is_the_plain_base_model(tiny_run, tiny_model_dir):
    """The base row runs with the adapters disabled: it must equal evaluating the base alone."""
    with_adapter = evaluate.evaluate(None, [str(tiny_run / "adapter")], max_new_tokens=6, save=False)
    alone = evaluate.evaluate(str(tiny_model_dir), [], run_dir=tiny_run, max_new_tokens=6, save=False)
    assert list(alone.table["model"]) == ["base"]
    assert alone.table.loc[0, "loss"] == pytest.approx(with_adapter.table.loc[0, "loss"], rel=1e-5)
    assert list(alone.examples["base answer"]) == list(with_adapter.examples["base answer"])


def test_cancel_midway_returns_partial_results(tiny_run):
    cancel = threading.Event()

    def progress(frac, msg):
        if msg.startswith(f"{tiny_run.name}: 1/3"):  # the adapter finished the first example: stop
            cancel.set()

    report = evaluate.evaluate(
        None, [str(tiny_run / "adapter")], max_new_tokens=6, batch_size=1, progress=progress, cancel=cancel
    )
    assert report.cancelled
    assert report.n_examples == 1 and list(report.table["n_examples"]) == [1, 1]
    assert len(report.examples) == 1
    assert json.loads((report.saved_to / "metrics.json").read_text())["cancelled"] is True


def test_cancel_before_start_gives_empty_report_and_saves_nothing(tiny_run):
    cancel = threading.Event()
    cancel.set()
    before = len(eval_report.list_evaluations(tiny_run))
    report = evaluate.evaluate(None, [str(tiny_run / "adapter")], max_new_tokens=4, cancel=cancel)
    assert report.cancelled and report.n_examples == 0 and len(report.examples) == 0
    assert report.saved_to is None and len(eval_report.list_evaluations(tiny_run)) == before


def test_loss_matches_the_models_own_loss_on_response_tokens(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from app.data import Example
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ex = Example(
        [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am TuneBot."}],
        0,
        {"instruction": "Who are you?", "input": ""},
    )
    prompt, ids, labels = eval_data.encode_for_eval(ex, tok, DataConfig())
    # prompt tokens unlabelled, the answer + <|im_end|> labelled, the newline after it not (as in training)
    assert labels[: len(prompt)] == [-100] * len(prompt) and labels[len(prompt)] != -100
    assert tok.decode([t for t in labels if t != -100]) == "I am TuneBot.<|im_end|>"
    nll, count = evaluate.response_nll(model, ids, labels)
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    assert count == sum(t != -100 for t in labels)
    assert nll / count == pytest.approx(ref, rel=1e-5)


def test_generation_prompt_is_everything_before_the_last_answer(tiny_model_dir):
    from app.data import Example
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am TuneBot."},
    ]
    cfg = DataConfig(system_prompt="Be brief.", max_seq_len=16)  # 16 cuts the training ids, never the prompt
    prompt, ids, _ = eval_data.encode_for_eval(Example(msgs, 0), tok, cfg)
    want = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, *msgs[:-1]], tokenize=False, add_generation_prompt=True
    )
    assert tok.decode(prompt) == want
    assert len(ids) == 16 < len(prompt)


def test_batched_generation_matches_one_at_a_time(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    texts = ["What is the capital of France?", "hi", "Give three tips for staying healthy please."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True) for t in texts]
    prompts = [list(p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p) for p in prompts]
    batched = evaluate.generate_answers(model, tok, prompts, 10)
    single = [evaluate.generate_answers(model, tok, [p], 10)[0] for p in prompts]
    assert batched == single
    assert len({len(p) for p in prompts}) == 3, "prompts of different lengths exercise the left padding"


def test_cancel_stops_a_generation_in_progress(tiny_model_dir):
    """The stop flag is checked at every generated token, not only between batches."""
    from transformers import AutoModelForCausalLM

    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = list(tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"])
    full = evaluate.generate_answers(model, tok, [prompt], 40)[0]
    stop = threading.Event()
    stop.set()
    cut = evaluate.generate_answers(model, tok, [prompt], 40, cancel=stop)[0]
    assert len(tok(cut)["input_ids"]) <= 2 < len(tok(full)["input_ids"])


def test_file_with_placeholders_and_max_examples(tmp_path, tiny_model_dir):
    path = tmp_path / "identity.json"
    path.write_text(
        json.dumps([{"instruction": f"q{i}", "input": "", "output": "I am {{name}}."} for i in range(5)]),
        encoding="utf-8",
    )
    cfg = DataConfig(path=str(path), placeholders={"name": "TuneBot"})
    report = evaluate.evaluate(str(tiny_model_dir), [], data=cfg, max_examples=2, max_new_tokens=4)
    assert report.n_examples == 2 and report.info["available"] == 5
    assert set(report.examples["reference"]) == {"I am TuneBot."}
    assert report.saved_to is None  # no adapter from a run: nothing to save next to


def test_clear_errors(tmp_path, tiny_model_dir, tiny_run):
    with pytest.raises(evaluate.EvalError, match="no data to evaluate on"):
        evaluate.evaluate(str(tiny_model_dir), [])
    with pytest.raises(evaluate.EvalError, match="max_new_tokens: 0"):
        evaluate.evaluate(str(tiny_model_dir), [], data="x.json", max_new_tokens=0)
    with pytest.raises(evaluate.EvalError, match="not found"):
        evaluate.evaluate(str(tiny_model_dir), [str(tmp_path / "nope")], data="x.json")
    # a run that held nothing out
    cfg = runs.load_config(tiny_run).replace(**{"data.val_size": 0.0, "train.output_dir": str(tmp_path)})
    run = runs.create_run(cfg, "noval")
    shutil.copytree(tiny_run / "adapter", run / "adapter")
    with pytest.raises(evaluate.EvalError, match="held out no validation examples"):
        evaluate.evaluate(None, [str(run / "adapter")])
    # an adapter made for another architecture (hidden 32) does not fit the hidden-64 base
    from tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", hidden=32)
    adapter = make_adapter(other, tmp_path / "other-adapter")
    with pytest.raises(evaluate.EvalError, match="does not fit the base model"):
        evaluate.evaluate(str(tiny_model_dir), [str(adapter)], data=str(runs.load_config(tiny_run).data.path))


def test_cli_prints_the_table_as_json(tiny_run, capsys):
    from app.__main__ import main

    code = main(
        [
            "evaluate",
            "--run",
            str(tiny_run),
            "--adapter",
            str(tiny_run / "adapter"),
            "--max-examples",
            "2",
            "--max-new-tokens",
            "4",
            "--json",
            "--no-save",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["model"] for row in out["table"]] == ["base", tiny_run.name]
    assert out["n_examples"] == 2 and out["saved_to"] is None
    assert {"loss", "perplexity", "rougeL", "bleu", "exact_match", "delta_rougeL"} <= set(out["table"][1])


def test_cli_table_text(tiny_run, capsys):
    from app.__main__ import main

    code = main(
        [
            "evaluate",
            "--adapter",
            str(tiny_run / "adapter"),
            "--max-examples",
            "1",
            "--max-new-tokens",
            "2",
            "--no-save",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "change vs base" in text and tiny_run.name in text and "rougeL" in text


def test_candidates_list_adapters_and_checkpoints(tiny_run):
    ckpt = tiny_run / "checkpoints" / "checkpoint-3"
    shutil.copytree(tiny_run / "adapter", ckpt)
    (ckpt / "trainer_state.json").write_text("{}")
    found = dict(adapters.candidates(tiny_run.parent))
    assert found[f"{tiny_run.name} (adapter)"] == str(tiny_run / "adapter")
    assert found[f"{tiny_run.name}/checkpoint-3"] == str(ckpt)
    assert adapters.display_name(ckpt) == f"{tiny_run.name}/checkpoint-3"


def test_efficiency_report_reads_the_event_fields_train_writes(tmp_path, tiny_model_dir):
    """Events with the exact keys app.train writes (started: trainable/total params, model, memory estimate;
    log: tokens_per_s; finished/stopped: train_s, peak_rss_mb); every figure below is worked out by hand."""
    run = tmp_path / "run"
    run.mkdir()
    RunConfig(model=ModelConfig(name_or_path=str(tiny_model_dir))).save(run / "config.yaml")
    est = {"total_gib": 400 / 1024, "device": "cpu"}  # MemoryEstimate.to_json: nothing writes total_bytes
    history.append_event(
        run,
        "started",
        method="lora",
        model=str(tiny_model_dir),
        device="cpu",
        trainable_params=1000,
        total_params=50_000,
        memory=est,
    )
    for step, rate in ((1, 10.0), (2, 40.0), (3, 50.0)):
        history.append_event(run, "log", step=step, loss=1.0, tokens_per_s=rate)
    history.append_event(run, "stopped", step=3, train_s=12.5, peak_rss_mb=300.0)
    history.append_event(run, "resumed", from_step=3, method="lora", model=str(tiny_model_dir), device="cpu")
    history.append_event(run, "finished", step=5, train_s=7.5, peak_rss_mb=500.0, label_tokens_per_s=20.0)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "tokenizer.json").write_bytes(b"x" * 50_000)  # not weights: not counted

    rep = efficiency.efficiency_report(run)
    model_bytes = sum(f.stat().st_size for f in Path(tiny_model_dir).glob("*.safetensors"))
    assert rep["training_s"] == 20.0  # 12.5 + 7.5: both sessions
    assert rep["tokens_per_s"] == 40.0  # median of 10, 40, 50
    assert rep["label_tokens_per_s"] == 20.0 and rep["steps"] == 5 and rep["status"] == "finished"
    assert rep["peak_memory_bytes"] == 500 * 2**20 and rep["peak_memory_kind"] == "rss"
    assert rep["estimated_memory_bytes"] == 400 * 2**20 and rep["memory_vs_estimate"] == 1.25
    assert rep["trainable_params"] == 1000 and rep["trainable_share"] == pytest.approx(0.02)
    assert rep["artifact_bytes"] == 1000 and rep["model_bytes"] == model_bytes
    assert rep["size_share"] == pytest.approx(1000 / model_bytes)


def test_efficiency_report_of_an_empty_run_has_nones(tmp_path):
    (tmp_path / "config.yaml").write_text("method: lora\n")
    rep = efficiency.efficiency_report(tmp_path)
    assert rep["status"] == "created" and rep["training_s"] is None and rep["peak_memory_bytes"] is None


def test_import_does_not_load_torch():
    code = "import sys, app.evaluate; print('torch' in sys.modules, 'gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], "the Evaluate tab imports this module: keep torch lazy"


def test_validation_loss_matches_the_trainers_eval_loss(tiny_model_dir, tmp_path):
    """The same split, the same masks, the same loss: on a val split that fits one eval batch (3 examples, batch
    4: the Trainer then averages nothing per batch), evaluate()'s loss equals the eval_loss training logged."""
    from app import train

    cfg = RunConfig(
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        lora=LoraConfig(rank=4, alpha=8, dropout=0.0, target_modules="all-linear"),
        data=DataConfig(path=str(write_sums(tmp_path / "sums.json")), val_size=0.25),
        train=TrainConfig(
            max_steps=2,
            batch_size=4,
            grad_accum=1,
            learning_rate=1.0e-2,
            save_steps=0,
            gradient_checkpointing=False,
            output_dir=str(tmp_path),
        ),
    )
    run = runs.create_run(cfg, "crosscheck")
    assert train.run(cfg, run) == "finished"
    logged = [e for e in history.load_events(run) if e["type"] == "eval"][-1]["eval_loss"]
    report = evaluate.evaluate(None, [str(run / "adapter")], max_new_tokens=1, save=False)
    assert report.n_examples == 3
    assert report.table.loc[1, "loss"] == pytest.approx(logged, rel=1e-4)


# ---- slow: a real trained adapter ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)  # training ~3 min + evaluation ~1 min on an idle 2-core CPU; 12 min measured under load
def test_trained_identity_adapter_beats_the_base(identity_run):
    """The identity adapter (conftest.identity_run: 81 records, 12 steps) evaluated on the 10 held out: it answers
    as TuneBot, so its ROUGE-L against the held-out answers is clearly higher than the base's. Measured: ROUGE-L
    11.0 -> 37.8, loss 2.35 -> 0.83 nats/token (with 20 steps at 2e-3: 10.4 -> 43.9)."""
    run, _cfg, held_file = identity_run
    names = IDENTITY_NAMES
    data = DataConfig(path=str(held_file), placeholders=names)
    report = evaluate.evaluate(None, [str(run / "adapter")], data=data, max_new_tokens=48)
    base, tuned = report.table.loc[0], report.table.loc[1]
    print(eval_report.format_table(report))
    print(f"ROUGE-L base {base['rougeL']:.1f} -> adapter {tuned['rougeL']:.1f} on {report.n_examples} held out")
    assert report.n_examples == IDENTITY_HOLDOUT
    assert tuned["rougeL"] > base["rougeL"] + 15
    assert tuned["loss"] < base["loss"] - 0.5
    assert report.examples[f"{run.name} answer"].str.contains("TuneBot").sum() >= IDENTITY_HOLDOUT // 2
    assert report.examples["base answer"].str.contains("TuneBot").sum() == 0
    eff = efficiency.efficiency_report(run)
    assert eff["training_s"] > 0 and eff["trainable_share"] < 0.1 and eff["size_share"] < 0.2


def test_the_validation_split_is_the_one_the_trainer_held_out_whatever_the_seed(tiny_model_dir, tmp_path):
    """Evaluate's "validation split" is app.data.prepare's with the run's own seed, as the trainer makes it."""
    from app import data as data_mod
    from app import eval_data, modeling

    data = write_alpaca(tmp_path / "d.json", n=40)
    cfg = tiny_config(tiny_model_dir, data, **{"train.seed": 7, "data.val_size": 0.25})
    tokenizer = modeling.load_tokenizer(str(tiny_model_dir))
    held_out = data_mod.prepare(cfg.data, tokenizer, seed=7).val
    other = data_mod.prepare(cfg.data, tokenizer, seed=42).val
    assert {e.index for e in held_out} != {e.index for e in other}  # the seed matters for this data
    found = eval_data._validation_examples(cfg, tmp_path, tokenizer)
    assert [e.index for e in found] == [e.index for e in held_out]


# ---- preference runs: reward accuracy and margin on the held-out pairs ----------------------------------------
def write_pairs(path: Path, n: int = 12) -> Path:
    records = [
        {"prompt": f"What is {i} plus {i}?", "chosen": f"The answer is {2 * i}.", "rejected": f"It is {2 * i + 1}!"}
        for i in range(n)
    ]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def preference_run(model_dir: Path, root: Path, objective: str) -> Path:
    """A run folder of a preference objective (12 pairs, 3 held out) with a perturbed adapter/."""
    cfg = RunConfig(
        model=ModelConfig(name_or_path=str(model_dir)),
        objective=objective,
        data=DataConfig(path=str(write_pairs(root / "pairs.json")), val_size=0.25),
        train=TrainConfig(output_dir=str(root / "runs")),
    )
    run = runs.create_run(cfg, f"eval-{objective}")
    make_adapter(model_dir, run / runs.ADAPTER, seed=3, std=0.5)
    return run


def _answer_logp(model, tok, prompt: list[dict], answer: str) -> tuple[float, int]:
    """log p(answer | prompt) summed over the answer's tokens, with plain transformers: the chat template renders
    the prompt (with the generation prompt) and prompt + answer; the answer is where the two token lists part."""
    import torch

    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
    head_ids, ids = tok(head, add_special_tokens=False)["input_ids"], tok(full, add_special_tokens=False)["input_ids"]
    start = next((k for k, (a, b) in enumerate(zip(head_ids, ids, strict=False)) if a != b), len(head_ids))
    with torch.no_grad():
        logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return sum(float(logps[k - 1, ids[k]]) for k in range(start, len(ids))), len(ids) - start


def _plain_margins(model_dir: Path, adapter: Path | None, pairs: list[dict]) -> list[tuple[float, float]]:
    """(summed margin, per-token margin), chosen - rejected, of each pair with the base or base + adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(model, adapter) if adapter else model
    out = []
    for pair in pairs:
        (c, nc), (r, nr) = (_answer_logp(model.eval(), tok, pair["prompt"], pair[k]) for k in ("chosen", "rejected"))
        out.append((c - r, c / nc - r / nr))
    return out


def _held_out(run: Path, model_dir: Path) -> list[dict]:
    from app import modeling, preference_data

    cfg = runs.load_config(run)
    val = preference_data.prepare(cfg, modeling.load_tokenizer(str(model_dir))).val
    return [{"prompt": row["prompt"], "chosen": row["chosen"][0]["content"], "rejected": row["rejected"][0]["content"]}
            for row in val]  # fmt: skip


def test_a_dpo_run_reports_reward_accuracy_and_margin_on_its_held_out_pairs(tiny_model_dir, tmp_path):
    run = preference_run(tiny_model_dir, tmp_path, "dpo")
    report = evaluate.evaluate(None, [str(run / "adapter")], max_new_tokens=4)
    table = report.table
    pairs = _held_out(run, tiny_model_dir)
    assert report.n_examples == len(pairs) == 3 and report.info["split"] == f"validation split of run {run.name}"
    assert list(report.examples["reference"]) == [p["chosen"] for p in pairs]  # the other metrics: chosen answers
    base = _plain_margins(tiny_model_dir, None, pairs)
    tuned = _plain_margins(tiny_model_dir, run / "adapter", pairs)
    assert table["mean_margin"].tolist() == pytest.approx(
        [sum(m for m, _ in base) / 3, sum(m for m, _ in tuned) / 3], abs=1e-3
    )
    # DPO's reward is the log-prob relative to the reference (the base): the adapter's margin above the base's
    above = [t > b for (t, _), (b, _) in zip(tuned, base, strict=True)]
    assert math.isnan(table.loc[0, "reward_accuracy"]) and table.loc[1, "reward_accuracy"] == pytest.approx(
        100 * sum(above) / 3
    )
    margins = table["mean_margin"].tolist()
    assert table.loc[1, "delta_mean_margin"] == pytest.approx(margins[1] - margins[0])
    assert abs(margins[1] - margins[0]) > 1e-3, "the perturbed adapter really changes the margins"
    assert report.examples[f"{run.name} margin"].tolist() == pytest.approx([m for m, _ in tuned], abs=1e-3)
    again = eval_report.load_evaluation(report.saved_to)  # the saved evaluation keeps the columns
    assert again.table["mean_margin"].tolist() == pytest.approx(table["mean_margin"].tolist())
    assert "mean_margin" in eval_report.format_table(report) and report.info["reward_reference"] == "base"


def test_a_reference_free_run_scores_each_model_by_its_own_per_token_margin(tiny_model_dir, tmp_path, capsys):
    from app.__main__ import main

    run = preference_run(tiny_model_dir, tmp_path, "simpo")
    code = main(["evaluate", "--adapter", str(run / "adapter"), "--max-new-tokens", "2", "--json", "--no-save"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["table"]
    pairs = _held_out(run, tiny_model_dir)
    for row, adapter in zip(rows, (None, run / "adapter"), strict=True):
        per_token = [m for _, m in _plain_margins(tiny_model_dir, adapter, pairs)]
        assert row["reward_accuracy"] == pytest.approx(100 * sum(m > 0 for m in per_token) / 3)
        assert row["mean_margin"] is not None


def test_a_dpo_run_evaluated_on_a_file_that_holds_no_pairs_says_so(tiny_model_dir, tmp_path):
    run = preference_run(tiny_model_dir, tmp_path, "dpo")
    with pytest.raises(eval_data.EvalError, match="not preference records"):
        evaluate.evaluate(None, [str(run / "adapter")], data=str(write_sums(tmp_path / "sums.json")), save=False)
