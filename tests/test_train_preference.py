"""Preference training (DPO, ORPO, SimPO, KTO) with TRL's real trainers on the tiny model, through app.train.run:
each objective learns (finite, falling loss; reward margin up), every method combines with DPO, the reference
model follows preference.reference, Stop and Resume continue from the checkpoint's step, and events.jsonl carries
the preference metrics the Train tab plots. The slow test shows DPO on the default model prefers the chosen answers
of held-out pairs more than the base does, loading the adapter with plain PEFT."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch
from test_train_kit import events_of, one_torch_thread, stop_when, tiny_config  # noqa: F401

from app import history, learned, preference_train, runs, train
from app.train import Dist

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "abc 0123456789 xyz"),
    ("Who are you?", "I am a helpful assistant trained by TuneDesk.", "eat well sleep"),
    ("Give three tips for staying healthy.", "Eat well, sleep, and exercise.", "the capital is abc"),
]
"""Tiny pairs from words the tiny tokenizer knows, repeated so a few steps at a high learning rate learn them."""


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    records = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS * 4]
    path = tmp_path_factory.mktemp("pref") / "pairs.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def kto_file(tmp_path_factory):
    records = [{"prompt": p, "completion": a, "label": a == c} for p, c, r in PAIRS * 4 for a in (c, r)]
    path = tmp_path_factory.mktemp("kto") / "kto.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def pref_config(model_dir, data_path, objective="dpo", method="lora", **changes):
    """6 optimizer steps of 2 x 2 pairs at learning rate 5e-3 (LoRA) on the tiny model, no held-out pairs."""
    base = {
        "objective": objective,
        "train.packing": False,
        "train.max_steps": 6,
        "train.learning_rate": 5.0e-3 if method in ("lora", "qlora") else 1.0e-3,
        "train.save_steps": 0,
        "data.val_size": 0.0,
    }
    return tiny_config(model_dir, data_path, method, **{**base, **changes})


def trained(cfg):
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir, "failed")
    return run_dir


def assert_learned(run_dir, margin: bool = True):
    """Every logged loss finite, the last below the first, and (`margin`) the reward margin grew. ORPO's loss is
    mostly the chosen answer's cross-entropy (the odds-ratio term weighs beta 0.1): in 6 steps its margin is noise."""
    logs = events_of(run_dir, "log")
    losses = [e["loss"] for e in logs]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0], losses
    margins = history.read(run_dir).series("reward_margin")[1]
    assert len(margins) == 6 and (margins[-1] > margins[0] or not margin), margins


@pytest.mark.parametrize("objective", ["dpo", "orpo", "simpo", "kto"])
def test_each_objective_trains_with_falling_loss(tiny_model_dir, pairs_file, kto_file, runs_tmp, objective):
    data = kto_file if objective == "kto" else pairs_file
    run_dir = trained(pref_config(tiny_model_dir, data, objective))
    assert_learned(run_dir, margin=objective != "orpo")
    (started,) = events_of(run_dir, "started")
    assert started["objective"] == objective and started["train_examples"] == (24 if objective == "kto" else 12)
    log = events_of(run_dir, "log")[-1]
    expected = {"reward_margin", "reward_chosen", "reward_rejected"}
    assert expected | ({"reward_accuracy"} if objective != "kto" else set()) <= set(log)  # KTO has no pairs to rank
    assert log["reward_margin"] == pytest.approx(log["reward_chosen"] - log["reward_rejected"], abs=1e-5)
    adapter = runs.final_artifact(run_dir)
    assert sorted(p.name for p in adapter.iterdir() if p.is_dir()) == []  # the trained adapter only, no "ref" copy
    # "did it learn?" compares with one reference answer: skipped for preference runs, with the reason logged
    assert not (run_dir / learned.BASE).exists() and learned.load(run_dir) is None


@pytest.mark.parametrize("method", ["full", "qlora"])
def test_full_and_qlora_combine_with_dpo(tiny_model_dir, pairs_file, runs_tmp, method):
    run_dir = trained(pref_config(tiny_model_dir, pairs_file, "dpo", method))
    assert_learned(run_dir)
    artifact = runs.final_artifact(run_dir)
    assert artifact.name == ("model" if method == "full" else "adapter")


def test_trackers_get_the_preference_figures_events_jsonl_has(tiny_model_dir, pairs_file, runs_tmp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from app import tracking

    cfg = pref_config(tiny_model_dir, pairs_file, "dpo", **{"train.report_to": ["tensorboard"]})
    run_dir = trained(cfg)
    acc = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    logged = {e["step"]: e for e in events_of(run_dir, "log")}
    margins = acc.Scalars("train/rewards/margins")  # TRL's own name, for every tracker
    assert [s.step for s in margins] == sorted(logged)
    for scalar in margins:
        assert scalar.value == pytest.approx(logged[scalar.step]["reward_margin"], abs=1e-5)
    assert {"train/tokens_per_s", "train/rewards/accuracies"} <= set(acc.Tags()["scalars"])


def _session(cfg):
    return train.build(cfg, runs.create_run(cfg), threading.Event(), "cpu", Dist())


@pytest.mark.parametrize(
    ("method", "reference", "copy"),
    [("lora", "auto", False), ("full", "auto", True), ("freeze", "auto", True), ("lora", "copy", True)],
)
def test_reference_is_the_adapter_switched_off_or_a_frozen_copy(
    tiny_model_dir, pairs_file, runs_tmp, method, reference, copy
):
    cfg = pref_config(tiny_model_dir, pairs_file, "dpo", method, **{"preference.reference": reference})
    trainer = _session(cfg).trainer
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not copy:  # LoRA: no second model and no second adapter; TRL disables the adapter for the reference
        assert trainer.ref_model is None and list(model.peft_config) == ["default"]
        return
    ref = trainer.ref_model
    assert ref is not None and ref is not model and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    before = {name: p.detach().clone() for name, p in ref.named_parameters()}
    trainer.train()
    assert all(torch.equal(before[name], p) for name, p in ref.named_parameters())  # the reference never trains


def test_precomputed_reference_holds_no_copy(tiny_model_dir, pairs_file, runs_tmp):
    cfg = pref_config(tiny_model_dir, pairs_file, "dpo", "full", **{"preference.reference": "precompute"})
    trainer = _session(cfg).trainer
    assert trainer.ref_model is None
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[-1]["loss"] < logs[0]["loss"] and logs[-1]["rewards/margins"] > 0


def test_arguments_carry_the_run_settings_and_the_objective(tiny_model_dir, pairs_file, tmp_path):
    from app import objectives

    cfg = pref_config(tiny_model_dir, pairs_file, "simpo", **{"preference.simpo_gamma": 0.25})
    args = preference_train.arguments(cfg, objectives.of(cfg), tmp_path, "cpu", False, False)
    assert type(args).__name__ == "CPOConfig" and args.loss_type == "simpo" and args.cpo_alpha == 0.0
    assert args.beta == 2.0 and args.simpo_gamma == pytest.approx(0.5)  # a quarter of SimPO's usual beta
    assert args.max_steps == 6 and args.learning_rate == 5e-3 and args.max_length == cfg.data.max_seq_len
    assert not args.gradient_checkpointing and not args.bf16


def test_dpo_stop_then_resume_continues_from_the_checkpoint_step(tiny_model_dir, pairs_file, runs_tmp):
    changes = {"train.max_steps": 8, "train.save_steps": 100, "data.val_size": 0.25}
    cfg = pref_config(tiny_model_dir, pairs_file, "dpo", **changes)
    reference = trained(cfg)
    ref_loss = {e["step"]: e["loss"] for e in events_of(reference, "log")}

    run_dir = runs.create_run(cfg)
    stop = threading.Event()
    watcher = stop_when(run_dir, stop, 3)
    assert train.run(cfg, run_dir, stop) == "stopped"
    watcher.join(5)
    at = events_of(run_dir, "stopped")[0]["step"]
    assert 3 <= at < 8 and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert history.latest_checkpoint(run_dir).name == f"checkpoint-{at}"  # saved on Stop, so resume starts here
    assert not (run_dir / history.CHECKPOINTS / ".partial").exists()  # staged, then renamed into place

    assert train.run(cfg, run_dir, resume=True) == "finished"
    assert [e["step"] for e in events_of(run_dir, "log")] == list(range(1, 9))  # continues at at+1
    (resumed,) = events_of(run_dir, "resumed")
    assert resumed["from_step"] == at and resumed["objective"] == "dpo"
    for e in events_of(run_dir, "log"):  # optimizer, scheduler, data order and RNG restored
        assert e["loss"] == pytest.approx(ref_loss[e["step"]], rel=1e-4), e["step"]
    evals = events_of(run_dir, "eval")
    assert evals and {"eval_reward_margin", "eval_reward_accuracy"} <= set(evals[-1])
    found = history.read(run_dir)
    assert found.series("eval_reward_accuracy")[0] == [e["step"] for e in evals]
    for event in events_of(run_dir):  # every field written is one the event log's schema declares
        assert set(event) - {"type", "time"} <= set(history.EVENT_FIELDS[event["type"]]), event["type"]


# ---- the default model -----------------------------------------------------------------------------------------
MAX_LEN = 128
"""Tokens per sequence (prompt + one answer) in the slow test: training cuts there, and the margin is measured so."""


def _answer_logp(model, tokenizer, prompt: list[dict], answer: str) -> float:
    """log p(answer | prompt) summed over the answer's tokens, rendered with the chat template and cut at MAX_LEN
    tokens as DPO's collator cuts it."""
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
    start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"][:MAX_LEN]])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    token_logps = logps.gather(-1, ids[0, 1:, None])[:, 0]
    return token_logps[start - 1 :].sum().item()


def _mean_margin(model, tokenizer, pairs) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected): how much more the model prefers the chosen answer."""
    logp = [[_answer_logp(model, tokenizer, r.prompt, answer) for answer in (r.chosen, r.rejected)] for r in pairs]
    return sum(chosen - rejected for chosen, rejected in logp) / len(logp)


@pytest.mark.slow
def test_dpo_on_the_default_model_raises_the_held_out_margin_over_the_base(default_model_dir, shared_data, runs_tmp):
    """LoRA DPO on 40 single-turn pairs of LlamaBoard's dpo_en_demo.json (12 steps of 2 pairs); 8 other pairs held
    out. The adapter is loaded with plain PEFT, as any user of the run's adapter/ folder would. Measured here: the
    held-out margin 19.2 -> 20.6 nats (~3.5 min on a busy 2-core CPU)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from app import preference_data
    from app.config import DataConfig

    source = shared_data / "dpo_en_demo.json"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    loaded = preference_data.load(DataConfig(path=str(source)), preference_data.PAIRS).records
    single = [r for r in loaded if len(r.prompt) == 1 and len(r.prompt[0]["content"]) < 400]
    train_pairs, held_out = single[:40], single[40:48]
    data = runs_tmp.parent / "pairs.json"
    records = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in train_pairs]
    data.write_text(json.dumps(records), encoding="utf-8")
    changes = {
        "data.max_seq_len": MAX_LEN,
        "train.max_steps": 12,
        "train.batch_size": 2,
        "train.grad_accum": 1,
        "train.learning_rate": 1.0e-3,
        "lora.rank": 8,
        "lora.alpha": 16.0,
        "lora.target_modules": "all-linear",
    }
    run_dir = runs.create_run(cfg := pref_config(default_model_dir, data, "dpo", **changes))
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir, "failed")
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    base = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    before = _mean_margin(base, tokenizer, held_out)
    tuned = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    after = _mean_margin(tuned, tokenizer, held_out)
    assert after > before, (before, after)
