"""Training on the tiny model: each method trains only what it should, the run folder and its events are right,
Stop leaves a loadable adapter, Resume continues at the checkpoint's step, failures end as `failed` events."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from test_train_kit import events_of, one_torch_thread, stop_when, tiny_config, write_alpaca  # noqa: F401

from app import history, runs, threads, train, train_failures
from app.train import Dist


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


def _train_session(cfg, run_dir):
    """Build a session, snapshot every parameter, train it; returns (before, model after)."""
    session = train.build(cfg, run_dir, threading.Event(), "cpu", Dist())
    model = session.trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    session.trainer.train()
    session.gather.remove()
    after = dict(model.named_parameters())
    return before, after


def _changed(before, after):
    return {name for name in before if not torch.equal(before[name], after[name].detach())}


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapters_train_and_base_weights_stay_bit_identical(tiny_model_dir, data_file, runs_tmp, method):
    cfg = tiny_config(tiny_model_dir, data_file, method)
    before, after = _train_session(cfg, runs.create_run(cfg))
    changed = _changed(before, after)
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_B" in name for name in changed)  # B starts at zero: a changed B means the adapter learned
    frozen = [name for name in before if "lora_" not in name]
    assert frozen and not (_changed({n: before[n] for n in frozen}, after))
    if method == "qlora":
        quantized = [m for m in after.values() if type(m).__name__ == "Params4bit"]
        assert quantized  # the base really is 4-bit, and its packed bytes did not move


def test_freeze_changes_only_the_last_layers(tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(tiny_model_dir, data_file, "freeze")  # tiny model: 2 layers, train the last 1
    before, after = _train_session(cfg, runs.create_run(cfg))
    changed = _changed(before, after)
    assert changed and all(name.startswith("model.layers.1.") for name in changed)
    trainable = {name for name, p in after.items() if p.requires_grad}
    assert trainable == {name for name in before if name.startswith("model.layers.1.")}


def test_full_trains_every_weight(tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(tiny_model_dir, data_file, "full")
    before, after = _train_session(cfg, runs.create_run(cfg))
    assert _changed(before, after) == set(before)


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "qlora"])
def test_each_method_writes_a_complete_run_folder(tiny_model_dir, data_file, runs_tmp, method):
    cfg = tiny_config(tiny_model_dir, data_file, method)
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    counts = {kind: len(events_of(run_dir, kind)) for kind in ("started", "log", "checkpoint", "eval", "finished")}
    # save_steps 2 of 3 steps: checkpoints at 2 and at the end; eval at each save step and at the end
    assert counts == {"started": 1, "log": 3, "checkpoint": 2, "eval": 2, "finished": 1}
    log = events_of(run_dir, "log")
    assert [e["step"] for e in log] == [1, 2, 3]
    assert all(e["total_steps"] == 3 and e["loss"] > 0 and e["tokens_per_s"] > 0 for e in log)
    started = events_of(run_dir, "started")[0]
    assert started["device"] == "cpu" and 0 < started["trainable_params"] <= started["total_params"]
    assert started["memory"]["total_gib"] > 0  # app.memory's estimate, for the UI to show beside the real peak
    finished = events_of(run_dir, "finished")[0]
    assert finished["peak_rss_mb"] > 0 and finished["step"] == 3
    assert [p.name for p in history.checkpoints(run_dir)] == ["checkpoint-2", "checkpoint-3"]
    assert runs.run_status(run_dir) == "finished" and not (run_dir / runs.LOCK).exists()
    artifact = runs.final_artifact(run_dir)
    assert (artifact / "tokenizer_config.json").is_file()
    if method in ("lora", "qlora"):
        assert artifact.name == "adapter" and finished["adapter"] == str(artifact)
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in artifact.iterdir()}
    else:
        assert artifact.name == "model" and (artifact / "model.safetensors").is_file()


def test_adapter_loads_with_plain_peft_and_reproduces_the_trained_model(tiny_model_dir, data_file, runs_tmp):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_model_dir, data_file, "lora", **{"train.max_steps": 4})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        plain = base(ids).logits
        tuned = PeftModel.from_pretrained(base, run_dir / "adapter").eval()(ids).logits
    assert not torch.allclose(plain, tuned, atol=1e-4)  # the adapter changes the output


def test_samples_are_generated_during_training(tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(
        tiny_model_dir,
        data_file,
        "lora",
        **{
            "train.max_steps": 4,
            "train.sample_every": 2,
            "train.sample_prompts": ["Who are you?", "abc"],
            "data.val_size": 0.0,
        },
    )
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    samples = events_of(run_dir, "sample")
    assert [e["step"] for e in samples] == [2, 4]
    assert [s["prompt"] for s in samples[0]["samples"]] == ["Who are you?", "abc"]
    assert all(isinstance(s["answer"], str) for s in samples[0]["samples"])
    assert not events_of(run_dir, "eval")  # val_size 0: no held-out data, no eval


def test_stop_saves_adapter_and_resume_continues_exactly(tiny_model_dir, data_file, runs_tmp):
    changes = {"train.max_steps": 8, "train.save_steps": 100}
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **changes)
    reference = runs.create_run(cfg)
    assert train.run(cfg, reference) == "finished"
    ref_loss = {e["step"]: e["loss"] for e in events_of(reference, "log")}

    run_dir = runs.create_run(cfg)
    stop = threading.Event()
    watcher = stop_when(run_dir, stop, 3)
    assert train.run(cfg, run_dir, stop) == "stopped"
    watcher.join(5)
    stopped = events_of(run_dir, "stopped")[0]
    at = stopped["step"]
    assert 3 <= at < 8 and runs.run_status(run_dir) == "stopped"
    assert stopped["adapter"] and (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert history.latest_checkpoint(run_dir).name == f"checkpoint-{at}"  # saved on Stop, so resume starts here

    assert train.run(cfg, run_dir, resume=True) == "finished"
    steps = [e["step"] for e in events_of(run_dir, "log")]
    assert steps == list(range(1, 9))  # continues at at+1: no restart at 1, no duplicates
    resumed = events_of(run_dir, "resumed")
    assert len(resumed) == 1 and resumed[0]["from_step"] == at and len(events_of(run_dir, "started")) == 1
    # optimizer, scheduler, data order and RNG restored: the resumed steps match the uninterrupted run
    for e in events_of(run_dir, "log"):
        assert e["loss"] == pytest.approx(ref_loss[e["step"]], rel=1e-4), e["step"]
    assert runs.run_status(run_dir) == "finished"


def test_paged_optimizer_on_cpu_trains_with_the_unpaged_one_and_says_so(tiny_model_dir, data_file, runs_tmp, caplog):
    """A paged optimizer pages state through CUDA unified memory; on the CPU app.accel plans adamw_8bit instead
    (the run used to be refused), and the run's log says so."""
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **{"train.optimizer": "paged_adamw_8bit"})
    run_dir = runs.create_run(cfg)
    with caplog.at_level("WARNING", logger="tunedesk.train"):
        assert train.run(cfg, run_dir) == "finished"
    assert "paged_adamw_8bit not used" in caplog.text and "CUDA unified memory" in caplog.text
    assert "(adamw_8bit here)" in caplog.text
    assert runs.run_status(run_dir) == "finished" and len(events_of(run_dir, "log")) == 3
    started = events_of(run_dir, "started")[0]  # and the Train tab's log shows it (its event line prints message)
    assert "paged_adamw_8bit not used" in started["message"] and "(adamw_8bit here)" in started["message"]


def test_missing_model_and_bad_data_end_as_failed_with_a_message(tiny_model_dir, data_file, runs_tmp, tmp_path):
    cfg = tiny_config(tmp_path / "no-such-model", data_file, "lora")
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "failed"
    assert "no-such-model" in events_of(run_dir, "failed")[0]["message"]
    assert (run_dir / runs.ERROR_LOG).read_text().count("Traceback") == 1

    broken = tmp_path / "broken.json"
    broken.write_text("{ not json", encoding="utf-8")
    cfg = tiny_config(tiny_model_dir, broken, "lora")
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "failed"
    assert "broken.json" in events_of(run_dir, "failed")[0]["message"]
    summary = runs.summarize(run_dir)
    assert summary.status == "failed" and "broken.json" in summary.message


def test_out_of_memory_message_gives_the_estimate_and_fixes():
    from app.config import RunConfig

    cfg = RunConfig().replace(**{"model.name_or_path": "llama-3.1-8b", "method": "full"})
    message = train_failures.describe_failure(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), cfg, "cuda"
    )
    assert message.startswith("Out of GPU memory") and "Tried to allocate 2.00 GiB" in message
    assert "The estimate for this run is" in message and "QLoRA" in message
    generic = train_failures.describe_failure(MemoryError(), cfg.replace(**{"model.name_or_path": "/no/such"}), "cpu")
    assert generic.startswith("Out of RAM") and "batch_size" in generic


@pytest.mark.parametrize(
    "method, changes",
    [
        ("lora", {"train.optimizer": "adamw_8bit", "lora.use_rslora": True}),
        ("qlora", {"quant.bits": 8, "train.gradient_checkpointing": True}),
        ("lora", {"lora.use_dora": True, "lora.target_modules": "all-linear", "train.packing": True}),
        ("full", {"train.gradient_checkpointing": True, "train.lr_scheduler": "cosine", "train.warmup_ratio": 0.5}),
    ],
)
def test_variants_train_to_the_end(tiny_model_dir, data_file, runs_tmp, method, changes):
    cfg = tiny_config(tiny_model_dir, data_file, method, **{"train.max_steps": 2, **changes})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir)[-1]
    logs = events_of(run_dir, "log")
    assert [e["step"] for e in logs] == [1, 2] and all(e["loss"] > 0 and e["grad_norm"] > 0 for e in logs)
    assert runs.final_artifact(run_dir) is not None


def test_cpu_threads_follow_what_other_programs_use_now(monkeypatch):
    """One thread per physical core when the CPU is idle (even right after a job, when the 1-minute load average
    still says busy), fewer when other programs keep cores busy, never 0; split among local processes."""
    import psutil

    cores = psutil.cpu_count(logical=False) or 1
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (50.0, 50.0, 50.0), raising=False)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0.0)
    assert threads.cpu_threads() == cores
    assert threads.cpu_threads(local_world=cores * 2) == 1
    monkeypatch.setattr(threads, "busy_cpus", lambda: float(threads.os.cpu_count()))
    assert threads.cpu_threads() == 1


def test_busy_cpus_is_a_short_sample_within_the_cpu_count():
    import psutil

    start = time.perf_counter()
    busy = threads.busy_cpus(0.2)
    assert time.perf_counter() - start < 1.0  # Start is not held up
    assert 0.0 <= busy <= psutil.cpu_count()
