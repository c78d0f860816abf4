"""Export a trained run for other runtimes, each export checked against the trained model.

One module per format (``merged``, ``adapter``, ``int8``, ``onnx``, ``gguf``), all in the
:data:`FORMATS` registry; :mod:`~finjust.export.parity` is the check every export ends with,
:mod:`~finjust.export.run` the command's library function.
"""

from finjust.export import adapter, gguf_format, int8, merged, onnx_format  # noqa: F401  (register the formats)
from finjust.export.registry import FORMATS, ExportFormat, ParityThresholds, get_format, read_result
from finjust.export.run import export_run

__all__ = ["FORMATS", "ExportFormat", "ParityThresholds", "export_run", "get_format", "read_result"]
