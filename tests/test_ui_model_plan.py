"""Model tab on several GPUs: with distributed.num_processes > 1 the memory panel's verdict, figure and chart are
each GPU's, from app.parallel's planner, and the plan's line shows under the verdict. The handler gets exactly the
inputs the tab wires to it (every form widget and the language)."""

from __future__ import annotations

import json

import pytest

from app import estimate
from app.config import RunConfig
from app.ui import app as ui_app
from app.ui import model_tab, plots

GIB = plots.GIB


@pytest.fixture(scope="module")
def built():
    return ui_app.build_blocks("en")


@pytest.fixture()
def gpu_24(monkeypatch):
    """Every estimate judged against 24 GiB GPUs on a machine with 128 GiB of RAM, whatever this machine has."""
    monkeypatch.setattr(
        estimate.Target, "of", classmethod(lambda cls, device="auto", capacity=None: cls("cuda", 24 * GIB, "GPU"))
    )
    monkeypatch.setattr(estimate.parallel, "host_ram", lambda device: 128 * GIB)


def _values(ctx, cfg: RunConfig):
    updates = ctx.form.updates_from(cfg)
    values = {c: (updates[c]["value"] if c in updates else c.value) for c in ctx.form.inputs()}
    values[ctx.lang_selector] = "en"
    return values


def _70b_qlora(ctx, gpus: int) -> RunConfig:
    return ctx.defaults.replace(
        **{
            "model.name_or_path": "llama-3.1-70b-instruct",
            "method": "qlora",
            "quant.bits": 4,
            "data.max_seq_len": 512,
            "train.batch_size": 1,
            "train.gradient_checkpointing": True,
            "train.device": "cuda",
            "distributed.num_processes": gpus,
        }
    )


def test_two_gpus_show_the_plan_and_the_per_gpu_verdict(built, gpu_24):
    _, ctx = built
    h = ctx.handles["model"]
    out = model_tab.estimate_panel(ctx, _values(ctx, _70b_qlora(ctx, 2)), data=False)
    verdict = out[h.verdict]
    assert "Fits" in verdict and "each of 2 GPUs" in verdict and 'class="td-fits"' in verdict
    assert "Plan: FSDP + QLoRA with CPU offload over 2 GPUs" in verdict
    plan = out[h.details]["plan"]
    assert plan["strategy"] == "fsdp" and plan["fits"] is True and plan["per_gpu_gib"] < 24
    assert f"Fits: {plan['per_gpu_gib']:.1f}" in verdict  # the figure of each GPU, not the whole run's
    figure = json.loads(out[h.plot].plot)
    assert any("gathered" in (trace.get("name") or "") for trace in figure["data"])


def test_one_gpu_keeps_the_single_device_verdict(built, gpu_24):
    _, ctx = built
    h = ctx.handles["model"]
    out = model_tab.estimate_panel(ctx, _values(ctx, _70b_qlora(ctx, 1)), data=False)
    assert "Does not fit" in out[h.verdict] and "Plan:" not in out[h.verdict]
    assert out[h.details]["plan"] is None


def test_a_named_strategy_that_does_not_fit_says_the_shortfall(built, gpu_24):
    _, ctx = built
    h = ctx.handles["model"]
    cfg = _70b_qlora(ctx, 2).replace(**{"distributed.strategy": "ddp"})
    out = model_tab.estimate_panel(ctx, _values(ctx, cfg), data=False)
    assert "Does not fit" in out[h.verdict] and "short per GPU" in out[h.verdict]
    assert 'class="td-no"' in out[h.verdict]
