"""What a training run cost, from its events and files: time, tokens/s, peak memory vs the estimate, sizes.

efficiency_report(run_dir) -> dict      the Evaluate tab's efficiency panel
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from app import history, runs


def efficiency_report(run_dir: str | Path) -> dict:
    """What a run cost, from its history (app.history) and files: training_s (optimizer-step time summed over every
    session), wall_s (first start to last end), steps, tokens_per_s (median of the logged rates: the first step's
    warm-up does not skew it), label_tokens_per_s, peak_memory_bytes (measured: CUDA allocator peak on a GPU run,
    else the process's peak RSS, which includes everything else that process held, e.g. the app) next to
    estimated_memory_bytes (the estimate made before it started) and memory_vs_estimate (measured / estimated),
    trainable_params, total_params, trainable_share, artifact_bytes (the adapter's or model's weight files),
    model_bytes (the base model's safetensors) and size_share. Facts the run did not record are None."""
    run_dir = Path(run_dir)
    found = history.read(run_dir)
    first = found.sessions[0] if found.sessions else None
    out: dict[str, Any] = {
        "run": run_dir.name,
        "status": runs.run_status(run_dir),
        "method": first.method if first else None,
        "device": first.device if first else None,
        "steps": found.ending.step if found.ending else None,
    }
    out.update(_time_facts(found))
    out.update(_memory_facts(found))
    out.update(_param_facts(first))
    out.update(_size_facts(run_dir, first))
    return out


def _time_facts(found: history.RunHistory) -> dict:
    train_s = [e.train_s for e in found.endings if e.train_s is not None]
    rates = [p.tokens_per_s for p in found.logs if p.tokens_per_s is not None]
    wall = found.ending.time - found.started if found.started is not None and found.ending else None
    return {
        "training_s": round(sum(train_s), 2) if train_s else None,
        "wall_s": round(wall, 2) if wall is not None else None,
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "label_tokens_per_s": found.ending.label_tokens_per_s if found.ending else None,
    }


def _memory_facts(found: history.RunHistory) -> dict:
    mb = 2**20
    cuda = [e.peak_cuda_mb for e in found.endings if e.peak_cuda_mb is not None]
    rss = [e.peak_rss_mb for e in found.endings if e.peak_rss_mb is not None]
    first = found.sessions[0] if found.sessions else None
    on_gpu = str(first.device if first else "").startswith("cuda") and bool(cuda)
    peak = max(cuda) if on_gpu else max(rss) if rss else None
    est = first.estimated_memory_bytes if first else None
    peak_bytes = int(peak * mb) if peak is not None else None
    return {
        "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": ("cuda" if on_gpu else "rss") if peak else None,
        "peak_rss_bytes": int(max(rss) * mb) if rss else None,
        "peak_cuda_bytes": int(max(cuda) * mb) if cuda else None,
        "estimated_memory_bytes": est,
        "memory_vs_estimate": round(peak_bytes / est, 3) if peak_bytes and est else None,
    }


def _param_facts(first: history.Session | None) -> dict:
    trainable, total = (first.trainable_params, first.total_params) if first else (None, None)
    share = trainable / total if isinstance(trainable, int) and isinstance(total, int) and total else None
    return {"trainable_params": trainable, "total_params": total, "trainable_share": share}


def _weights_bytes(folder: Path | None) -> int | None:
    """Bytes of the weight files (*.safetensors, *.bin) in a folder: the tokenizer saved beside an adapter
    (2-10 MB) would otherwise outweigh a 1 MB adapter."""
    if folder is None or not folder.is_dir():
        return None
    files = [f for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern) if f.is_file()]
    return sum(f.stat().st_size for f in files) if files else None


def _size_facts(run_dir: Path, first: history.Session | None) -> dict:
    artifact = runs.final_artifact(run_dir)
    model = first.model if first else None
    if not model:
        cfg = runs.load_config(run_dir) if (run_dir / runs.CONFIG).is_file() else None
        model = cfg.model.name_or_path if cfg else None
    model_bytes = _weights_bytes(Path(model)) if model and Path(model).is_dir() else None
    art_bytes = _weights_bytes(artifact)
    return {
        "artifact": str(artifact) if artifact else None,
        "artifact_bytes": art_bytes,
        "model_path": model,
        "model_bytes": model_bytes,
        "size_share": art_bytes / model_bytes if art_bytes and model_bytes else None,
    }
