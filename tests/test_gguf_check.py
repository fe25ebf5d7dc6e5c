"""The GGUF parity check (app.gguf_check): llama.cpp's answers from an exported file against transformers' from the
folder or adapter it came from. Tiny Llama: the mechanics, and files broken the ways exported files break (wrong
EOS, no chat template, a wrong pre-tokenizer) each flagged with its cause. Default model (slow): the identity run's
F16 export agrees on every prompt but near-ties; its Q4_K_M (llama.cpp's quantizer) loads and reports honestly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gguf as gguf_py
import pytest
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
from test_train_kit import one_torch_thread  # noqa: F401  (one torch thread: ~4x faster on this shared CPU)

from app import gguf, gguf_check, llamacpp
from app.gguf_check import CheckError, ParityReport, Row, check

STRING, UINT32 = gguf_py.GGUFValueType.STRING, gguf_py.GGUFValueType.UINT32


def rewrite(src: Path, dst: Path, new: dict[str, MetadataDetails] | None = None, remove: tuple[str, ...] = ()) -> Path:
    """A copy of a GGUF with metadata changed or removed, every other field and tensor as it was (gguf-py's own
    gguf_new_metadata copier)."""
    reader = gguf_py.GGUFReader(src)
    arch = reader.fields[gguf_py.Keys.General.ARCHITECTURE].contents()
    copy_with_new_metadata(reader, gguf_py.GGUFWriter(dst, arch=arch, endianess=reader.endianess), dict(new or {}),
                           list(remove))  # fmt: skip
    return dst


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    gguf_check.add_arguments(p)
    return p


def share(rows: list[dict] | list[Row]) -> float:
    agree = [r["agree"] if isinstance(r, dict) else r.agree for r in rows]
    return sum(agree) / len(agree)


@pytest.fixture(scope="module")
def tiny_f16(tiny_model_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-check") / "model-f16.gguf"
    gguf.write(tiny_model_dir, path, "f16", progress=lambda f, m: None)
    return path


@pytest.fixture(scope="module")
def tiny_report(llama_cpp, tiny_f16, tiny_model_dir) -> ParityReport:
    return check(tiny_f16, tiny_model_dir, max_new_tokens=24)


# ---- the figure comes from the rows -------------------------------------------------------------------------------
def row(agree: bool, near_tie: bool = False, first_diff: int | None = None) -> Row:
    return Row(prompt="p", hf_answer="a", gguf_answer="b", hf_ids=[1], gguf_ids=[2], first_diff=first_diff,
               agree=agree, near_tie=near_tie, margin=None, tokens_equal=True)  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "figure", "without_ties"),
    [
        ([row(True)] * 4 + [row(False, first_diff=3)], "first 16 tokens agree on 4/5 prompts (80%)", 0.8),
        ([row(True)] * 3 + [row(False, True, 9), row(False, False, 2)],
         "first 16 tokens agree on 3/5 prompts (60%); 3/4 (75%) leaving out 1 near-tie (margin < 0.5 logits)", 0.75),
        ([row(True), row(False, True, 1), row(False, True, 4)],
         "first 16 tokens agree on 1/3 prompts (33%); all 2 differences are near-ties (margin < 0.5 logits)", 1.0),
    ],
)  # fmt: skip
def test_the_figure_is_counted_from_the_rows(rows, figure, without_ties):
    report = ParityReport(gguf="m.gguf", against="m", lora=None, n_tokens=16, near_tie_logits=0.5, rows=rows,
                          has_template=True, template_equal=True, eos_ok=True, eos={})  # fmt: skip
    assert report.figure() == figure and report.format().splitlines()[1] == figure
    assert report.agreement == share(rows) and report.agreement_excluding_ties == pytest.approx(without_ties)
    data = json.loads(json.dumps(report.to_json()))
    assert data["figure"] == figure and data["agreement"] == share(data["rows"])


# ---- the tiny Llama ---------------------------------------------------------------------------------------------
def test_tiny_f16_against_its_folder(tiny_report, tiny_model_dir):
    report = tiny_report
    assert len(report.rows) == 5 and [r.prompt for r in report.rows] == list(gguf_check.BUILTIN_PROMPTS)
    assert report.tokens_equal and all(r.tokens_equal and r.token_diff == "" for r in report.rows)
    assert report.has_template and report.template_equal and report.eos_ok and report.problems == []
    assert report.eos["gguf_eos_text"] == "<|im_end|>" and report.eos["hf_end_texts"] == ["<|im_end|>"]
    assert report.load_warnings == [] and llamacpp.REPACKING_NOTE in report.notes
    assert report.near_tie_logits == gguf_check.NEAR_TIE_LOGITS[1]  # F16's threshold, read from general.file_type
    for r in report.rows:  # each row's verdict is what its token ids say
        diff = next((i for i, (a, b) in enumerate(zip(r.hf_ids, r.gguf_ids, strict=False)) if a != b), None)
        if diff is None and len(r.hf_ids) != len(r.gguf_ids):
            diff = min(len(r.hf_ids), len(r.gguf_ids))
        assert r.first_diff == diff and r.agree == (diff is None or diff >= report.n_tokens)
        assert r.near_tie == (r.margin is not None and r.margin < report.near_tie_logits)
        assert 1 <= len(r.hf_ids) <= 24 and 1 <= len(r.gguf_ids) <= 24
        # an F16 file differs from fp32 only where rounding can flip a choice
        assert r.agree or r.near_tie, (r.prompt, r.margin)
    assert report.agreement == share(report.rows) and report.agreement_excluding_ties == 1.0


def test_an_adapter_against_its_merged_export(llama_cpp, tiny_model_dir, tmp_path):
    """--against an adapter: base + adapter through PEFT, unmerged, against the GGUF of their fp32 merge."""
    from test_export import make_adapter

    from app.export import export_gguf

    adapter = make_adapter(tiny_model_dir, tmp_path / "lora", seed=3, targets="all-linear", r=8)
    path = export_gguf(adapter, tmp_path / "out", "f32", progress=lambda f, m: None)
    report = check(path, adapter, prompts=["Who are you?", "What is 12 times 7?"], max_new_tokens=16)
    assert report.problems == [] and report.tokens_equal and report.near_tie_logits == gguf_check.NEAR_TIE_LOGITS[0]
    assert all(r.agree or r.near_tie for r in report.rows), [(r.first_diff, r.margin) for r in report.rows]


def test_wrong_eos_is_flagged(llama_cpp, tiny_f16, tiny_model_dir, tmp_path):
    bad = rewrite(tiny_f16, tmp_path / "eos.gguf", {"tokenizer.ggml.eos_token_id": MetadataDetails(UINT32, 0)})
    report = check(bad, tiny_model_dir, prompts=["Who are you?"], max_new_tokens=8)
    assert not report.eos_ok and report.eos["gguf_eos_id"] == 0
    problem = next(p for p in report.problems if p.startswith("EOS"))
    assert "EOS is <|endoftext|> (id 0) but the model ends answers with <|im_end|> (id 2)" in problem
    assert "answers will run on past the end" in problem and "re-export with TuneDesk" in problem


def test_missing_chat_template_is_flagged(llama_cpp, tiny_f16, tiny_model_dir, tmp_path, capsys):
    bad = rewrite(tiny_f16, tmp_path / "nochat.gguf", remove=("tokenizer.chat_template",))
    args = parser().parse_args([str(bad), "--against", str(tiny_model_dir), "--prompt", "Hi", "--max-new-tokens", "8"])
    assert gguf_check.main(args) == 1  # problems: exit 1, the report printed all the same
    out = capsys.readouterr().out
    assert "chat template in GGUF: NO" in out
    assert "no chat template in the GGUF" in out and "answers will look like gibberish" in out
    assert "--chat-template" in out and "re-export with TuneDesk" in out


def test_wrong_pre_tokenizer_is_flagged(llama_cpp, tiny_f16, tiny_model_dir, tmp_path):
    # SmolLM's pre-tokenizer splits digits one by one; the tiny tokenizer merges them ("01", "23", ...)
    bad = rewrite(tiny_f16, tmp_path / "pre.gguf", {"tokenizer.ggml.pre": MetadataDetails(STRING, "smollm")})
    report = check(bad, tiny_model_dir, prompts=["Count 0123456789", "Hi"], max_new_tokens=8)
    assert [r.tokens_equal for r in report.rows] == [False, True] and not report.tokens_equal
    problem = next(p for p in report.problems if "tokenizes the prompt differently" in p)
    assert "(at token " in problem and "on 1 of 2 prompts" in problem
    assert "pre-tokenizer (tokenizer.ggml.pre = 'smollm') is likely wrong" in problem


def test_bad_input_is_one_line_and_exit_2(llama_cpp, tiny_f16, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(CheckError, match="no such file"):
        check(tmp_path / "none.gguf", tiny_model_dir)
    (tmp_path / "x.gguf").write_text("not a model")
    with pytest.raises(CheckError, match="not a GGUF file"):
        check(tmp_path / "x.gguf", tiny_model_dir)
    adapter = tmp_path / "orphan"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    for argv, says in [
        ([str(tiny_f16), "--against", str(adapter)], f"--against {adapter}"),
        ([str(tiny_f16)], "--against is required"),
        ([str(tiny_f16), "--against", str(tiny_model_dir), "--prompts", str(tmp_path / "no.txt")], "no such file"),
        ([str(tiny_f16), "--against", str(tiny_model_dir), "--lora", str(tmp_path / "x.gguf")], "not a GGUF file"),
    ]:
        assert gguf_check.main(parser().parse_args(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err, err


def test_cli_json_and_prompts_file(llama_cpp, tiny_f16, tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is 12 times 7?\n\n你好\n", encoding="utf-8")
    argv = [str(tiny_f16), "--against", str(tiny_model_dir), "--prompts", str(prompts), "--tokens", "4",
            "--max-new-tokens", "8", "--json"]  # fmt: skip
    assert gguf_check.main(parser().parse_args(argv)) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in data["rows"]] == ["What is 12 times 7?", "你好"] and data["n_tokens"] == 4
    agree = sum(r["agree"] for r in data["rows"])
    assert data["agreement"] == share(data["rows"])
    assert data["figure"].startswith(f"first 4 tokens agree on {agree}/2 prompts ({agree / 2:.0%})")
    assert data["problems"] == [] and data["tokens_equal"] is True and data["eos_ok"] is True


# ---- the default model (slow) -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(identity_run, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(adapter, merged folder, F16 GGUF) of the identity run: merged once in float32, exported by app.export."""
    from app.export import export_gguf, merge

    root = tmp_path_factory.mktemp("smol-check")
    adapter = identity_run[0] / "adapter"
    merged = merge(adapter, root / "merged", "float32", progress=lambda f, m: None)
    return adapter, merged, export_gguf(merged, root / "gguf", "f16", progress=lambda f, m: None)


@pytest.mark.slow
def test_identity_f16_agrees_but_near_ties(llama_cpp, smol, capsys):
    """The CLI's --json on the run's sample prompt + the built-in ones: every prompt agrees or differs only at a
    near-tie, the figure is the rows' share, and the GGUF says the model's new name."""
    _adapter, merged, f16 = smol
    assert gguf_check.main(parser().parse_args([str(f16), "--against", str(merged), "--json"])) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["rows"]
    print(data["figure"], [(r["prompt"], r["first_diff"], r["margin"]) for r in rows])
    assert [r["prompt"] for r in rows] == ["Who are you?", *gguf_check.BUILTIN_PROMPTS[:4]]  # the run's, then ours
    assert all(r["agree"] or r["near_tie"] for r in rows) and data["problems"] == []
    assert data["tokens_equal"] and data["has_template"] and data["template_equal"] and data["eos_ok"]
    assert data["load_warnings"] == []  # the export loads in llama.cpp with no warnings
    agree = sum(r["agree"] for r in rows)
    assert data["agreement"] == share(rows) and data["figure"].startswith(
        f"first 16 tokens agree on {agree}/{len(rows)} prompts ({agree / len(rows):.0%})"
    )
    assert "TuneBot" in rows[0]["gguf_answer"], rows[0]["gguf_answer"]


@pytest.mark.slow
def test_identity_f16_against_the_adapter_text_report(llama_cpp, smol, capsys):
    """--against the adapter (PEFT, unmerged): the text report's figure is what its rows say."""
    adapter, _merged, f16 = smol
    argv = [str(f16), "--against", str(adapter), "--prompt", "Who are you?", "--prompt", "What is 12 times 7?",
            "--max-new-tokens", "16"]  # fmt: skip
    assert gguf_check.main(parser().parse_args(argv)) == 0
    out = capsys.readouterr().out
    print(out)
    verdicts = [line.split(": ", 1)[1].split(",")[0] for line in out.splitlines() if line.startswith("[")]
    agree = verdicts.count("agree")
    assert len(verdicts) == 2 and out.splitlines()[1].startswith(
        f"first 16 tokens agree on {agree}/2 prompts ({agree / 2:.0%})"
    )
    assert "EOS: ok" in out and "equal to the model's" in out and "No problems found." in out


@pytest.mark.slow
def test_identity_q4_k_m_by_llama_cpp(llama_cpp, smol, tmp_path):
    """Q4_K_M as the Export tab writes it (app.export: F16, then llama.cpp's own quantizer, F16 removed): it loads
    without warnings, and the figure its report prints is the one its rows give (a 135M model at 4-5 bits may well
    differ: the check reports it, it does not hide it)."""
    from app.export import export_gguf

    _adapter, merged, _f16 = smol
    q4 = export_gguf(merged, tmp_path / "gguf", "q4_k_m", progress=lambda f, m: None)
    assert q4.name == "model-q4_k_m.gguf" and sorted(p.name for p in q4.parent.glob("*.gguf")) == [q4.name]
    with llamacpp.open_model(q4) as model:
        assert model.metadata["general.file_type"] == "15" and model.warnings == []
    report = check(q4, merged, prompts=["Who are you?", "What is the capital of France?"], max_new_tokens=16)
    print(report.format())
    assert report.near_tie_logits == gguf_check.NEAR_TIE_QUANT and report.tokens_equal and report.eos_ok
    assert report.agreement == share(report.rows)
    agree = sum(r.agree for r in report.rows)
    assert report.figure().startswith(f"first 16 tokens agree on {agree}/2 prompts ({agree / 2:.0%})")
    assert report.format().splitlines()[1] == report.figure()  # what it prints is what it computed
    beyond = sum(not r.agree and not r.near_tie for r in report.rows)
    assert any("beyond near-ties" in p for p in report.problems) == (beyond > 0)
