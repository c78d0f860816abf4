"""Export a trained run for other runtimes, each export checked against the trained model.

One module per format (``merged``, ``adapter``, ``int8``, ``onnx``, ``gguf``), all in the
:data:`FORMATS` registry; :mod:`~finjust.export.parity` is the check every export ends with,
:mod:`~finjust.export.run` the command's library function.

The format modules import transformers, peft and the run's loading code where they use them, and
:func:`export_run` is imported at first use (PEP 562): ``finjust export --help`` lists the formats
from the registry without loading any model code.
"""

from typing import TYPE_CHECKING, Any

from finjust.export import adapter, gguf_format, int8, merged, onnx_format  # noqa: F401  (register the formats)
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds, get_format, read_result

__all__ = ["FORMATS", "ExportFormat", "ParityThresholds", "export_run", "get_format", "read_result"]

if TYPE_CHECKING:
    from finjust.export.run import export_run


def __getattr__(name: str) -> Any:
    if name == "export_run":
        from finjust.export.run import export_run

        return export_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
