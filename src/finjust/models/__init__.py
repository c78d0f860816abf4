"""Loading pretrained models: local folders, GGUF files and models that packages ship."""

from finjust.models.load import LoadedModel, choose_device, choose_dtype, load_model

__all__ = ["LoadedModel", "choose_device", "choose_dtype", "load_model"]
