"""The estimate service: one answer (estimate, verdict, fixes, methods) that the Model tab's `estimate` endpoint and
`python -m app estimate --json` both show, judged against the device the config names on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from app import __main__ as cli
from app import devices, estimate, memory
from app.batching import longest_batch
from app.config import RunConfig
from app.memory import GIB

CASES = {
    "fits": {},
    "too-big": {
        "model": {"name_or_path": "llama-3.1-70b-instruct"},
        "method": "full",
        "train": {"gradient_checkpointing": False},
    },
}


@pytest.fixture(scope="module")
def built():
    from app.ui import app as ui_app

    return ui_app.build_blocks("en")


def _endpoint(demo):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return next(f for f in fns if f.api_name == "estimate")


@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_and_the_model_tab_endpoint_give_the_same_answer(built, case, tmp_path, capsys):
    demo, ctx = built
    partial = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(partial), encoding="utf-8")
    assert cli.main(["estimate", str(path), "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    dep = _endpoint(demo)
    assert len(dep.inputs) == 1  # the endpoint's one input: a partial config over the app's defaults
    assert ctx.defaults == RunConfig()  # the CLI reads the YAML over RunConfig(): the same base
    from_tab = dep.fn(partial)
    for key in ("total_gib", "breakdown_gib", "device", "device_memory_gib", "fits", "verdict", "fixes", "methods"):
        assert from_cli[key] == from_tab[key], key
    assert from_tab["device"] == devices.kind("auto")  # auto is this machine's device, never assumed cuda
    if case == "too-big":
        assert from_tab["verdict"] == "no"  # offered fixes (none where even all together fall short) make it fit
        assert all(fix["total_gib"] <= from_tab["device_memory_gib"] for fix in from_tab["fixes"])
    else:
        assert from_tab["verdict"] in ("fits", "tight") and from_tab["fixes"] == []


def test_the_verdict_and_fixes_follow_the_capacity():
    cfg = RunConfig().replace(**{"model.name_or_path": "llama-3.1-8b-instruct", "method": "lora"})
    roomy = estimate.service(cfg, estimate.Target("cuda", 80 * GIB, "GPU"))
    assert roomy.verdict == "fits" and roomy.fixes == [] and roomy.estimate.device == "cuda"
    total = roomy.estimate.total_bytes
    tight = estimate.service(cfg, estimate.Target("cuda", int(total / 0.9), "GPU"))
    assert tight.verdict == "tight" and tight.fixes == []
    short = estimate.service(cfg, estimate.Target("cuda", total - GIB, "GPU"))
    assert short.verdict == "no" and short.fixes and all(f.estimate.total_bytes < total for f in short.fixes)
    unknown = estimate.service(cfg, estimate.Target("cuda", None, "CUDA"))
    assert unknown.verdict == "unknown" and unknown.fixes == []
    assert all(f.estimate.fits for f in short.fixes), "only fixes that change the verdict"
    assert [row["method"] for row in roomy.methods] == ["full", "freeze", "lora", "qlora"]


def test_the_table_says_the_verdict_and_the_fixes(capsys, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(CASES["too-big"]), encoding="utf-8")
    assert cli.main(["estimate", str(path), "--device", "cuda", "--device-memory-gib", "48"]) == 0
    text = capsys.readouterr().out
    assert "does NOT fit in 48.0 GiB" in text and "fix: All of: " in text and "QLoRA" in text
    assert cli.main(["estimate", str(path), "--device", "cuda", "--device-memory-gib", "24"]) == 0
    text = capsys.readouterr().out
    assert "does NOT fit in 24.0 GiB" in text and "fix:" not in text and "no change offered here" in text


def test_target_of_auto_is_this_machine():
    target = estimate.Target.of("auto")
    found = devices.detect()
    assert (target.kind, target.capacity_bytes) == (found.kind, found.total_bytes)
    assert estimate.Target.of("cuda:99") == estimate.Target("cuda", None, "CUDA")


def test_the_cli_imports_no_torch_where_no_gpu_can_be_seen(tmp_path):
    """Sized for batch x max_seq_len (--no-data), or for a model whose tokenizer is not on this machine, the
    estimate needs no tokenizer: fast, and no torch."""
    code = (
        "import sys; from app import __main__ as m; "
        "assert m.main(['estimate', sys.argv[1], '--json', '--no-data']) == 0; "
        "assert m.main(['estimate', sys.argv[2], '--json']) == 0; "
        "from app import devices; assert ('torch' in sys.modules) == (not devices._surely_no_gpu())"
    )
    path, remote = tmp_path / "run.yaml", tmp_path / "remote.yaml"
    path.write_text("{}\n", encoding="utf-8")
    remote.write_text("model: {name_or_path: llama-3.1-70b-instruct}\n", encoding="utf-8")  # never downloaded here
    subprocess.run([sys.executable, "-c", code, str(path), str(remote)], check=True, capture_output=True)


# ---- sized for the data (issue 14, item 7) --------------------------------------------------------------------
def _dataset(path, answers: list[str]):
    records = [{"instruction": f"Question {i}?", "input": "", "output": text} for i, text in enumerate(answers)]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture()
def tiny_data(tmp_path, tiny_model_dir):
    """The tiny model with 5 short answers and one long one (~300 tokens), max_seq_len 2048 x batch 32."""
    path = _dataset(tmp_path / "mine.json", ["Paris."] * 5 + ["abc " * 150])
    cfg = RunConfig().replace(
        **{
            "model.name_or_path": str(tiny_model_dir),
            "data.path": str(path),
            "data.val_size": 0.0,
            "data.max_seq_len": 2048,
            "train.batch_size": 32,
        }
    )
    return cfg, path


def _trainer_batches(cfg: RunConfig):
    """The real token lengths the trainer sees (app.data.prepare with the model's tokenizer)."""
    from app import data, modeling

    tok = modeling.load_tokenizer(str(cfg.model.name_or_path))
    return [e.full_length for e in data.prepare(cfg.data, tok).train]


def test_the_estimate_is_sized_for_the_longest_batch_the_data_makes(tiny_data):
    cfg, path = tiny_data
    lengths = estimate.data_lengths(cfg)
    real = sorted(_trainer_batches(cfg), reverse=True)
    assert lengths is not None and list(lengths.lengths) == real and lengths.complete and lengths.name == path.name
    assert real[0] > 100 and real[1] < 40  # one long example among short ones
    target = estimate.Target("cuda", 80 * GIB, "GPU")
    answer = estimate.service(cfg, target)
    # 6 examples < batch 32: one batch of 6 rows, padded to the longest example, not 32 x 2048
    assert answer.sized == {
        "by": "data", "rows": 6, "tokens": real[0], "dataset": "mine.json", "examples": 6, "complete": True
    }  # fmt: skip
    arch = memory.architecture_from(cfg.model.name_or_path)
    shaped = cfg.replace(**{"train.batch_size": 6, "data.max_seq_len": real[0]})
    assert answer.estimate.total_bytes == memory.estimate(arch, shaped, "cuda", 80 * GIB).total_bytes
    blind = estimate.service(cfg, target, data=False)
    assert blind.sized["by"] == "config" and blind.estimate.total_bytes > 2 * answer.estimate.total_bytes
    assert answer.to_json()["sized_for"]["tokens"] == real[0]
    # a cut below the longest example narrows the batch; packing packs rows up to max_seq_len
    assert estimate.service(cfg.replace(**{"data.max_seq_len": 64}), target).sized["tokens"] == 64
    packed = estimate.service(cfg.replace(**{"train.packing": True, "data.max_seq_len": 256}), target).sized
    assert (packed["rows"], packed["tokens"]) == longest_batch(real, 32, 256, True)


def test_the_token_lengths_are_cached_by_file_and_rendering(tiny_data, monkeypatch):
    cfg, path = tiny_data
    calls = []
    tokenize = estimate._tokenize_lengths
    monkeypatch.setattr(estimate, "_tokenize_lengths", lambda *a: calls.append(a) or tokenize(*a))
    first = estimate.data_lengths(cfg)
    assert estimate.lengths_known(cfg)
    for changes in ({"train.batch_size": 2}, {"data.max_seq_len": 128}, {"train.packing": True}):
        assert estimate.data_lengths(cfg.replace(**changes)) is first  # sliders reuse the cached lengths
    assert len(calls) <= 1
    before = len(calls)
    longer = estimate.data_lengths(cfg.replace(**{"data.system_prompt": "You are a careful assistant. " * 5}))
    assert len(calls) == before + 1 and longer.lengths[0] > first.lengths[0]
    _dataset(path, ["Paris."] * 3)  # the file changed: measured again
    assert not estimate.lengths_known(cfg)
    assert estimate.data_lengths(cfg).examples == 3 and len(calls) == before + 2


def test_no_dataset_or_no_tokenizer_here_sizes_for_max_seq_len(tiny_data):
    cfg, _ = tiny_data
    missing = cfg.replace(**{"data.path": "no/such/file.json"})
    assert estimate.lengths_known(missing) and estimate.data_lengths(missing) is None
    remote = cfg.replace(**{"model.name_or_path": "llama-3.1-70b-instruct"})  # never downloaded: no tokenizer
    answer = estimate.service(remote, estimate.Target("cuda", 80 * GIB, "GPU"))
    assert answer.sized == {"by": "config", "rows": 32, "tokens": 2048}


def test_fixes_change_the_verdict_and_the_largest_batch_or_length_that_fits_is_offered(tiny_data):
    cfg, _ = tiny_data
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    big = RunConfig().replace(
        **{
            "model.name_or_path": "llama-3.1-8b-instruct",
            "train.batch_size": 8,
            "train.grad_accum": 2,
            "data.max_seq_len": 2048,
            "train.gradient_checkpointing": True,
        }
    )
    cap = 24 * GIB
    fixes = {f.key: f for f in estimate.service(big, estimate.Target("cuda", cap, "GPU"), data=False).fixes}
    assert fixes and all(f.estimate.fits for f in fixes.values())
    seq = fixes["shorter_seq"].changes["data.max_seq_len"]
    assert seq % 16 == 0 and memory.estimate(arch, big.replace(**{"data.max_seq_len": seq}), "cuda", cap).fits
    assert not memory.estimate(arch, big.replace(**{"data.max_seq_len": seq + 16}), "cuda", cap).fits, "largest"
    batch = fixes["micro_batch"].changes
    assert batch["train.batch_size"] * batch["train.grad_accum"] == 16
    bigger = 2 * batch["train.batch_size"]  # the next divisor of 8
    assert not memory.estimate(arch, big.replace(**{"train.batch_size": bigger}), "cuda", cap).fits, "largest"
    assert fixes["micro_batch"].params == {"batch": batch["train.batch_size"], "accum": batch["train.grad_accum"]}
    # sized for the data, a run that fits needs no fix, however large max_seq_len x batch reads
    small = estimate.service(cfg, estimate.Target("cuda", GIB, "GPU"))  # ~0.6 GiB, ~1.3 GiB for 32 x 2048
    assert small.verdict == "fits" and small.fixes == []
    assert estimate.service(cfg, estimate.Target("cuda", GIB, "GPU"), data=False).verdict == "no"


def test_the_cli_says_what_it_sized_for(tiny_data, tmp_path, capsys):
    cfg, _ = tiny_data
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    assert cli.main(["estimate", str(path), "--device", "cuda", "--device-memory-gib", "24"]) == 0
    assert "sized for your data (mine.json): longest batch 6 x" in capsys.readouterr().out
    assert cli.main(["estimate", str(path), "--json", "--no-data"]) == 0
    assert json.loads(capsys.readouterr().out)["sized_for"] == {"by": "config", "rows": 32, "tokens": 2048}


def test_a_preference_run_is_sized_for_its_longest_pair(tiny_data, tmp_path):
    """Pairs are measured as TRL tokenizes them (prompt + the longer answer; both sides share a batch's width),
    and the memory counts two such sequences per pair."""
    from transformers import AutoTokenizer

    cfg, _ = tiny_data
    pairs = [
        {"prompt": f"Question {i}?", "chosen": "Paris.", "rejected": "Rome. " * (3 + 40 * (i == 2))} for i in range(4)
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs), encoding="utf-8")
    dpo = cfg.replace(**{"objective": "dpo", "data.path": str(path)})
    tok = AutoTokenizer.from_pretrained(cfg.model.name_or_path)

    def tokens(pair: dict, side: str) -> int:
        messages = [{"role": "user", "content": pair["prompt"]}, {"role": "assistant", "content": pair[side]}]
        return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])

    longest = max(tokens(p, side) for p in pairs for side in ("chosen", "rejected"))
    answer = estimate.service(dpo, estimate.Target("cuda", 80 * GIB, "GPU"))
    assert answer.sized == {
        "by": "data", "rows": 4, "tokens": longest, "dataset": "pairs.json", "examples": 4, "complete": True
    }  # fmt: skip
    arch = memory.architecture_from(cfg.model.name_or_path)
    shaped = dpo.replace(**{"train.batch_size": 4, "data.max_seq_len": longest})
    assert answer.estimate.total_bytes == memory.estimate(arch, shaped, "cuda", 80 * GIB).total_bytes
    assert answer.estimate.breakdown["pairs"] > 0 and answer.estimate.breakdown["reference"] > 0
