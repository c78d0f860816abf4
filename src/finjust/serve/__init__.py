"""``finjust serve``: an OpenAI-compatible HTTP API over a trained run or an exported model.

:func:`create_app` builds the FastAPI application (tests use it in-process, the CLI hands it
to uvicorn). One worker thread owns the model; requests queue in front of it and greedy
non-streaming ones that wait together are answered by one batched ``generate`` call.
"""

from finjust.serve.app import create_app
from finjust.serve.options import ServeOptions
from finjust.serve.source import ServedModel, load_served_model

__all__ = ["ServeOptions", "ServedModel", "create_app", "load_served_model"]
