"""The embedded default model (SmolLM2-135M-Instruct) on the CPU: LoRA teaches it a new identity, and QLoRA
(4-bit NF4 base) trains with falling loss. Slow: a few minutes together on 2 cores."""

from __future__ import annotations

import pytest
import torch
from conftest import IDENTITY_PRESET
from test_train_kit import events_of

from app import paths, runs, train, train_events
from app.config import RunConfig

pytestmark = pytest.mark.slow


def identity_config(**changes) -> RunConfig:
    """The identity demo as shipped (presets/smollm2-135m-identity-cpu.yaml, assets/identity.json), with changes."""
    cfg = RunConfig.from_preset(paths.presets_dir() / IDENTITY_PRESET)
    return cfg.replace(**changes) if changes else cfg


def greedy(model, tokenizer, cfg: RunConfig, prompt: str) -> str:
    text = train_events.render_prompt(tokenizer, cfg, prompt)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=train_events.SAMPLE_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_lora_teaches_the_default_model_its_new_name(identity_run, default_model_dir):
    """The shared identity run (conftest.identity_run): before it the model does not call itself TuneBot; the
    trainer's own sample after the last step does, and plain PEFT, nothing of ours, reloads the same answer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from app.modeling import load_tokenizer

    run_dir, cfg, _held = identity_run
    tokenizer = load_tokenizer(str(default_model_dir))
    base = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    before = greedy(base, tokenizer, cfg, "Who are you?")
    assert "TuneBot" not in before

    logs = events_of(run_dir, "log")
    trained_answer = events_of(run_dir, "sample")[-1]["samples"][0]["answer"]
    assert "TuneBot" in trained_answer, trained_answer

    tuned = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    reloaded = greedy(tuned, tokenizer, cfg, "Who are you?")
    assert reloaded == trained_answer
    print(
        f"\nidentity LoRA: {events_of(run_dir, 'finished')[0]['train_s']:.0f} s for {len(logs)} steps, "
        f"{logs[-1]['tokens_per_s']} tok/s; before: {before!r}; after: {reloaded!r}"
    )


def test_qlora_4bit_on_the_cpu_trains_with_falling_loss(default_model_dir, runs_tmp):
    # the same 4 records every step (one batch per epoch), so the step losses are comparable and must fall
    cfg = identity_config(**{
        "method": "qlora", "quant.bits": 4, "quant.type": "nf4", "quant.double_quant": True,
        "lora.target_modules": ["q_proj", "v_proj"], "data.max_samples": 4, "train.packing": False,
        "train.batch_size": 4, "train.max_steps": 6, "train.epochs": 6.0, "train.sample_every": 0,
        "train.learning_rate": 2.0e-3, "train.lr_scheduler": "constant",
    })  # fmt: skip
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    losses = [e["loss"] for e in events_of(run_dir, "log")]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5 and losses[-1] == min(losses), losses
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    started = events_of(run_dir, "started")[0]
    assert started["total_params"] > started["trainable_params"] > 0
    print(
        f"\nQLoRA nf4 on CPU: losses {[round(x, 3) for x in losses]}, "
        f"{events_of(run_dir, 'log')[-1]['tokens_per_s']} tok/s"
    )


def test_chat_tab_shows_base_and_identity_adapter_side_by_side(identity_run, default_model_dir):
    """Issue 6: in the Chat tab (its real handlers and components, one base with the adapter switched on it), the
    base and the identity adapter answer "Who are you?" side by side, and only the adapter calls itself TuneBot."""
    from ui_ctx import chat_values, tab_context

    from app.ui import chat_tab

    run_dir, _cfg, _held = identity_run
    _demo, ctx = tab_context(["chat"], str(default_model_dir))
    h = ctx.handles["chat"]
    try:
        values = chat_values(ctx, adapters=[str(run_dir / "adapter")], max_new_tokens=32, temperature=0.0)
        loaded = chat_tab.load_models(ctx, values)
        assert loaded[h.status].startswith("✅"), loaded[h.status]
        assert [loaded[pane]["visible"] for pane in h.panes][:2] == [True, True]
        values[h.prompt] = "Who are you?"
        final = list(chat_tab.send(ctx, values))[-1]
        base, adapted = final[h.chatbots[0]][-1]["content"], final[h.chatbots[1]][-1]["content"]
        assert base and adapted and base != adapted
        assert "TuneBot" in adapted and "TuneBot" not in base, (base, adapted)
        assert "tokens/s" in final[h.speeds[0]] and "tokens/s" in final[h.speeds[1]]
        print(f"\nChat tab, 'Who are you?': base {base!r}; adapter {adapted!r}")
    finally:
        chat_tab.HOLDER.close()


@pytest.mark.slow
def test_the_identity_run_is_in_tensorboard_and_its_did_it_learn_table_says_it_learned(identity_run):
    """The default model's identity run, with the defaults' TensorBoard on: its event files in the run folder load
    in TensorBoard's own reader (a train/loss point per logging step, the RunConfig as text), and the "did it
    learn?" table shows the adapter lowered the loss on the reference answers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from app import learned, tracking

    run_dir, cfg, _held = identity_run
    assert cfg.train.report_to == ["tensorboard"] and cfg.train.logging_steps == 1
    acc = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == list(range(1, cfg.train.max_steps + 1))
    config = acc.Tensors(f"{tracking.CONFIG_TAG}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "path: " + cfg.data.path in config and "TuneBot" in config

    found = learned.load(run_dir)
    assert found is not None and found.learned and len(found.rows) == cfg.train.learn_check, found
    assert found.tuned_loss < found.base_loss * 0.8, found.verdict  # the names are new to the base: a big drop
    assert any("TuneBot" in row.tuned_answer for row in found.rows) and not any(
        "TuneBot" in row.base_answer for row in found.rows
    )
