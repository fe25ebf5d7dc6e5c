"""What a GGUF says about itself (issue 18): the general.* keys as llama.cpp's convert_hf_to_gguf.py writes them
(basename, size label, finetune, base model, tags, type), the file-type table the CLI and the Export tab offer, and
padded vocabulary rows marked UNUSED so that "[PAD<n>]" in a user's text stays ordinary text in llama.cpp."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf as gguf_py
import pytest
from gguf import GGUFReader
from test_export import make_adapter
from test_train_kit import one_torch_thread  # noqa: F401  (one torch thread: ~4x faster on this shared CPU)

from app import gguf
from app.commands import GGUF_QUANTS
from app.export import export_gguf

QUIET = {"progress": lambda f, m: None}
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def fields(path: Path) -> dict:
    return {k: f.contents() for k, f in GGUFReader(path).fields.items() if not k.startswith("tokenizer.ggml.")}


# ---- the table of file types -----------------------------------------------------------------------------------
def test_the_types_table_is_the_cli_choices():
    assert list(gguf.GGUF_TYPES) == list(GGUF_QUANTS)  # the same names, in the order the CLI and the UI offer them
    assert {n for n, t in gguf.GGUF_TYPES.items() if t.writer == "tunedesk"} == {"f16", "q8_0", "f32"}
    assert {t.writer for t in gguf.GGUF_TYPES.values()} == {"tunedesk", "llama.cpp"}
    for name, t in gguf.GGUF_TYPES.items():  # llama_ftype numbers as gguf-py (llama.cpp's own list) has them
        member = "ALL_F32" if name == "f32" else f"MOSTLY_{name.upper()}"
        assert t.ftype == gguf_py.LlamaFileType[member], name
        assert t.note and t.name == name


def test_expected_sizes_follow_bits_per_weight():
    eight_b = 8_030_000_000  # Llama-3.1-8B; llama.cpp's README: Q4_K_M 4.58 GiB, Q8_0 7.95 GiB, F16 14.96 GiB
    for quant, gib in (("q4_k_m", 4.58), ("q8_0", 7.95), ("f16", 14.96)):
        assert gguf.expected_size(eight_b, quant) / 2**30 == pytest.approx(gib, rel=0.01), quant
    rows = gguf.type_rows(134_515_008)  # SmolLM2-135M
    sizes = {name: size for name, size, _ in rows}
    assert sizes["q4_k_m"] < sizes["q5_k_m"] < sizes["q6_k"] < sizes["q8_0"] < sizes["f16"] < sizes["f32"]
    assert sizes["f16"] == 2 * 134_515_008 and [r[0] for r in rows] == list(GGUF_QUANTS)
    assert all(size is None for _, size, _ in gguf.type_rows(None))


def test_the_writer_leaves_llamacpp_types_to_llamacpp(tiny_model_dir, tmp_path):
    with pytest.raises(gguf.GGUFError, match="q4_k_m is quantized by llama.cpp from an F16 file"):
        gguf.write(tiny_model_dir, tmp_path / "x.gguf", "q4_k_m")
    assert not list(tmp_path.iterdir())


# ---- general.* ---------------------------------------------------------------------------------------------------
def test_general_keys_as_llamacpp_writes_them(tiny_model_dir, tmp_path):
    meta = gguf.Meta(name="my-run", finetune="my-run", base_hub_id=SMOL, tags=("tunedesk", "lora"))
    path = tmp_path / "m.gguf"
    gguf.write(tiny_model_dir, path, "f32", meta=meta)
    f = fields(path)
    assert f["general.type"] == "model" and f["general.name"] == "my-run" and f["general.finetune"] == "my-run"
    assert f["general.basename"] == "SmolLM2"  # read from the Hub id
    # the id's "135M" is far from this tiny model's weights: the label is counted, as llama.cpp's converter does
    # (the default model's 135M: test_gguf_lora's slow test)
    assert f["general.size_label"] == gguf_py.utility.size_label(gguf.count_params(tiny_model_dir), 0, 0, 0)
    assert f["general.base_model.count"] == 1
    assert f["general.base_model.0.name"] == "SmolLM2 135M Instruct"
    assert f["general.base_model.0.organization"] == "HuggingFaceTB"
    assert f["general.base_model.0.repo_url"] == f"https://huggingface.co/{SMOL}"
    assert f["general.tags"] == ["tunedesk", "lora"] and f["general.file_type"] == 0


def test_a_merged_fine_tune_names_its_run(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "my-run", seed=3, targets=["q_proj"])
    f = fields(export_gguf(adapter, tmp_path / "out", "f16", **QUIET))
    assert f["general.name"] == f["general.finetune"] == f["general.basename"] == "my-run"
    assert f["general.tags"] == ["tunedesk", "lora"] and f["general.file_type"] == 1
    n = gguf.count_params(tiny_model_dir)
    assert f["general.size_label"] == gguf_py.utility.size_label(n, 0, 0, 0)  # no Hub id: counted from the weights
    assert "general.base_model.count" not in f  # a local folder base has no Hub id to name


# ---- padded vocabulary rows ----------------------------------------------------------------------------------------
PADDED = 6


@pytest.fixture(scope="module")
def padded_model(tiny_model_dir, tmp_path_factory) -> tuple[Path, int]:
    """The tiny model with its embedding padded by 6 rows beyond the tokenizer (as models pad to a multiple of 64)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("padded") / "model"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    n = model.config.vocab_size
    model.resize_token_embeddings(n + PADDED)
    model.save_pretrained(folder)
    return folder, n


def test_padded_rows_are_unused_tokens(padded_model, tmp_path):
    folder, n = padded_model
    path = export_gguf(folder, tmp_path, "f32", **QUIET)
    reader = GGUFReader(path)
    tokens, types = reader.fields["tokenizer.ggml.tokens"].contents(), reader.fields["tokenizer.ggml.token_type"]
    types = types.contents()
    assert len(tokens) == n + PADDED and tokens[n] == f"[PAD{n}]"
    assert [gguf_py.TokenType(t) for t in types[n:]] == [gguf_py.TokenType.UNUSED] * PADDED
    assert gguf_py.TokenType.UNUSED not in {gguf_py.TokenType(t) for t in types[:n]}


def test_pad_text_is_ordinary_text_in_llamacpp(llama_cpp, padded_model, tmp_path):
    from app import llamacpp

    folder, n = padded_model
    path = export_gguf(folder, tmp_path, "f32", **QUIET)
    with llamacpp.open_model(path) as model:
        ids = model.tokenize(f"say [PAD{n}] and [PAD{n + 1}]")
        assert not set(ids) & set(range(n, n + PADDED)), ids  # USER_DEFINED would have matched the text
        assert len(ids) > 4 and model.detokenize(ids).endswith(f"say [PAD{n}] and [PAD{n + 1}]")
