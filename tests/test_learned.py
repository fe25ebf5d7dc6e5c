"""'Did it learn?' after the run, on the tiny model: the base and tuned answers and losses on the first training
examples (checked against the base and the saved adapter loaded on their own), the verdict that flags a run which
learned nothing, a resume that reuses the base record, and learn_check 0 writing nothing."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch
from test_train_kit import events_of, one_torch_thread, tiny_config  # noqa: F401

from app import history, learned, runs, train
from app.data import Example

PAIRS = [
    ("Who are you?", "I am a helpful assistant trained by TuneDesk."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Give three tips for staying healthy.", "Eat well, sleep, and exercise."),
    ("abc 0123456789", "abcdefghijklmnopqrstuvwxyz"),
]
LEARNS = {  # LoRA on every linear layer of the tiny model, 40 steps: the loss on the four answers falls by ~10%
    "data.val_size": 0.2,
    "lora.target_modules": "all-linear",
    "lora.rank": 16,
    "lora.alpha": 32.0,
    "train.max_steps": 40,
    "train.save_steps": 100,
    "train.learn_check": 4,
}


def _write(path, copies: int):
    """PAIRS as Alpaca records, `copies` times over in file order (records 0-3 are the four pairs)."""
    records = [{"instruction": q, "input": "", "output": a} for _ in range(copies) for q, a in PAIRS]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def learning_run(tiny_model_dir, tmp_path_factory):
    """One LoRA run that learns and its config: PAIRS x 10 with 20% held out, which is every copy of one pair
    (identical records stay on one side of the split), so the first training examples skip a record."""
    folder = tmp_path_factory.mktemp("learned")
    changes = {**LEARNS, "train.output_dir": str(folder / "runs")}
    cfg = tiny_config(tiny_model_dir, _write(folder / "pairs.json", copies=10), "lora", **changes)
    run_dir = runs.create_run(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one_torch_thread is per test; this run is shared by the module's tests
    try:
        assert train.run(cfg, run_dir) == "finished", history.load_events(run_dir)[-1]
    finally:
        torch.set_num_threads(threads)
    return run_dir, cfg


def _own_measure(model, tokenizer, cfg, rows):
    """(answer, loss per token) of each row's example, measured here by app.learned.measure on a model loaded
    apart from the run."""
    examples = [Example([{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.reference}],
                        r.index, {"instruction": r.prompt, "input": ""}) for r in rows]  # fmt: skip
    return [(answer, loss) for answer, loss, _ in learned.measure(model, tokenizer, cfg.data, examples)]


def test_a_run_that_learns_has_the_table_with_lower_tuned_loss_and_no_flag(learning_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, cfg = learning_run
    result = learned.load(run_dir)
    assert result is not None and len(result.rows) == 4
    held_out = {r.index for r in result.rows}
    assert [(r.prompt, r.reference) for r in result.rows] == [PAIRS[i % 4] for i in sorted(held_out)]
    assert all(r.tuned_loss < r.base_loss and r.change < 0 for r in result.rows)
    assert result.tuned_loss < result.base_loss * 0.95 and result.learned and not result.flags
    assert result.verdict.startswith("It learned") and result.step == 40
    assert len(result.table()) == 4 and len(result.table()[0]) == len(learned.COLUMNS)

    # the table's base side is the base model and its tuned side the saved adapter, each loaded on its own
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for row, (answer, loss) in zip(result.rows, _own_measure(base, tokenizer, cfg, result.rows), strict=True):
        assert row.base_answer == answer and row.base_loss == pytest.approx(loss, rel=1e-4)
    tuned = PeftModel.from_pretrained(base, run_dir / runs.ADAPTER)
    for row, (answer, loss) in zip(result.rows, _own_measure(tuned, tokenizer, cfg, result.rows), strict=True):
        assert row.tuned_answer == answer and row.tuned_loss == pytest.approx(loss, rel=1e-4)


def test_the_first_training_examples_are_compared_not_held_out_ones(learning_run):
    from app import data as data_mod
    from app.modeling import load_tokenizer

    run_dir, cfg = learning_run
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    prepared = data_mod.prepare(cfg.data, tokenizer, seed=cfg.train.seed)
    assert prepared.val  # 20% held out: the walk has to skip them
    assert [r.index for r in learned.load(run_dir).rows] == [e.index for e in prepared.train[:4]]


def test_the_learned_event_summarizes_the_table_before_the_run_ends(learning_run):
    run_dir, _ = learning_run
    (event,) = events_of(run_dir, learned.EVENT)
    result = learned.load(run_dir)
    assert event["examples"] == 4 and event["flags"] == [] and event["verdict"] == result.verdict
    assert event["tuned_loss"] == pytest.approx(result.tuned_loss)
    kinds = [e["type"] for e in history.load_events(run_dir)]
    assert kinds.index(learned.EVENT) < kinds.index("finished")  # a UI that stops at the final event still sees it


def test_a_learning_rate_of_almost_zero_is_flagged(tiny_model_dir, tmp_path, runs_tmp):
    # batch 2 x accumulation 2 = all four records: every step sees the same data, so only learning moves the loss
    cfg = tiny_config(
        tiny_model_dir, _write(tmp_path / "pairs.json", copies=1), "lora",
        **{"data.val_size": 0.0, "train.learning_rate": 1e-9, "train.learn_check": 4},
    )  # fmt: skip
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    result = learned.load(run_dir)
    assert [r.index for r in result.rows] == [0, 1, 2, 3] and not result.learned
    assert [f.split(":")[0] for f in result.flags] == ["The training loss did not fall", "The adapter changed nothing"]
    assert all(f.endswith("try a higher learning rate or more steps.") for f in result.flags)
    assert result.verdict.count("try a higher learning rate") == 1


def _stop_at(run_dir, stop: threading.Event, step: int) -> threading.Thread:
    def watch():
        offset = 0
        while not stop.is_set():
            events, offset = history.read_events(run_dir, offset)
            stop.set() if any(e["type"] == "log" and e["step"] >= step for e in events) else time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_resumed_run_reuses_the_base_record(tiny_model_dir, tmp_path, runs_tmp):
    cfg = tiny_config(
        tiny_model_dir, _write(tmp_path / "pairs.json", copies=4), "lora", **{**LEARNS, "train.max_steps": 8}
    )
    run_dir = runs.create_run(cfg)
    stop = threading.Event()
    watcher = _stop_at(run_dir, stop, 3)
    assert train.run(cfg, run_dir, stop) == "stopped"
    watcher.join(5)
    record = (run_dir / learned.BASE).read_bytes()
    at = events_of(run_dir, "stopped")[0]["step"]
    assert learned.load(run_dir).step == at < 8  # a stopped run gets its table too

    assert train.run(cfg, run_dir, resume=True) == "finished"
    assert (run_dir / learned.BASE).read_bytes() == record  # not measured again from the half-trained model
    result = learned.load(run_dir)
    base = json.loads(record)["examples"]
    assert result.step == 8 and [r.base_loss for r in result.rows] == [b["loss"] for b in base]


def test_no_base_record_is_made_from_a_model_that_has_trained(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, _write(tmp_path / "pairs.json", copies=1), "lora", **{"train.learn_check": 4})
    learned.record_base(tmp_path, cfg, model=None, tokenizer=None, store=None, step=5)  # a resume at step 5
    assert not (tmp_path / learned.BASE).exists()
    learned.record_tuned(tmp_path, cfg, model=None, tokenizer=None, step=8)  # nothing to compare with: no table
    assert learned.load(tmp_path) is None


def test_learn_check_zero_writes_nothing(tiny_model_dir, tmp_path, runs_tmp):
    cfg = tiny_config(tiny_model_dir, _write(tmp_path / "pairs.json", copies=1), "lora", **{"train.learn_check": 0})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    assert not (run_dir / learned.BASE).exists() and learned.load(run_dir) is None
    assert not events_of(run_dir, learned.EVENT)


def _rows(*losses):
    return [learned.Row(i, "q", "a", "x", "y", b, t, 10) for i, (b, t) in enumerate(losses)]


def test_the_verdict_names_what_did_not_improve():
    good = learned.judge(_rows((2.0, 1.0), (3.0, 1.5)), [2.5, 1.2], 10)
    assert good.learned and good.verdict == (
        "It learned: on 2 training examples the loss on the reference answers fell from 2.500 to 1.250 per token "
        "(-50%), and the training loss fell from 2.500 to 1.200."
    )
    flat = learned.judge(_rows((2.0, 1.995)), [2.5, 1.2], 10, "training")  # 0.25% lower: noise, not learning
    assert flat.flags == [
        "Training changed nothing: on 1 training examples the tuned model's loss on the reference answers is 1.995 "
        "per token against the base model's 2.000; try a higher learning rate or more steps."
    ]
    rising = learned.judge(_rows((2.0, 1.0)), [2.5, 2.6], 10)
    assert rising.flags == ["The training loss did not fall: 2.500 at the first logged step, 2.600 at the last; "
                            "try a higher learning rate or more steps."]  # fmt: skip
    assert learned.judge(_rows((2.0, 1.0)), [2.5], 10).learned  # one logged point: nothing to compare


def test_a_table_that_cannot_be_read_is_no_table(tmp_path):
    assert learned.load(tmp_path) is None
    (tmp_path / learned.TABLE).write_text("{ torn", encoding="utf-8")
    assert learned.load(tmp_path) is None
    result = learned.judge(_rows((2.0, 1.0)), [2.5, 1.0], 3)
    (tmp_path / learned.TABLE).write_text(json.dumps(result.to_json()), encoding="utf-8")
    assert learned.load(tmp_path) == result
