"""Loading pretrained models: local folders, GGUF files and models that packages ship.

The loading names are imported at first use (PEP 562): reading a recipe imports
:mod:`finjust.models.choices`, which must not bring torch's model code and transformers with it.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["LoadedModel", "choose_device", "choose_dtype", "load_model"]

if TYPE_CHECKING:
    from finjust.models.load import LoadedModel, choose_device, choose_dtype, load_model


def __getattr__(name: str) -> Any:
    if name in __all__:
        from finjust.models import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
