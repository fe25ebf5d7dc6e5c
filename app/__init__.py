"""TuneDesk: point-and-click fine-tuning of causal language models.

Core modules (config, memory, catalog, data, modeling, train, runs, chat, export, evaluate) never import gradio;
the Gradio UI lives in app.ui and calls into them.
"""

from app import libs as _libs

__version__ = "0.1.0"

_libs.decline_hub_kernels()  # before anything can import bitsandbytes (see app/libs.py)
