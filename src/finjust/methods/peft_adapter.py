"""What every peft-backed method shares: wrap with a config, save and load the adapter, merge.

A peft method only says which ``PeftConfig`` it wants; the adapter it saves is peft's own
format (``adapter_config.json`` + ``adapter_model.safetensors``), so
``PeftModel.from_pretrained(base, folder)`` loads it without finjust.
"""

from __future__ import annotations

import json
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from torch import nn

from finjust.errors import MethodError
from finjust.methods.registry import Method

# peft is imported where it is used, here and in each peft method's module: the recipe's validation
# and `finjust train --help` read every method's options, and importing peft (which imports
# bitsandbytes where installed, and that torch's inductor) took 1.3 of the 7 s such a command waited
if TYPE_CHECKING:
    from peft import PeftConfig


def task_type_of(model: nn.Module) -> str:
    """peft's task type for ``model``: a classifier's (``SEQ_CLS``) makes peft train and save its head."""
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


#: peft warnings about nothing the user did or can change: (message pattern, category)
PEFT_FALSE_ALARMS = (
    # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing whenever it wraps a model
    (".*is_gradient_checkpointing.*", FutureWarning),
    # transformers' generate passes position ids at every step; prompt tuning drops them, rightly
    # (the virtual tokens come first, as in training), once per answer
    ("Position ids are not supported for parameter efficient tuning", UserWarning),
    # peft's prompt learning passes the KV cache by transformers 4's name (see _cache_under_peft_s_name)
    (".*`past_key_values` is deprecated.*", FutureWarning),
)


@contextmanager
def peft_false_alarms_off() -> Iterator[None]:
    """Inside, :data:`PEFT_FALSE_ALARMS` are not shown (around peft's wrapping and generation);
    ``catch_warnings`` gives the caller's filters back on leaving."""
    with warnings.catch_warnings():
        for message, category in PEFT_FALSE_ALARMS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


#: what a model's ``generation_config`` may switch on (Qwen2.5-Instruct ships a repetition
#: penalty) that would make greedy decoding other than argmax: penalties, beam search, tokens
#: suppressed, forced or held back. The scorecard, serve's temperature 0 and the export check
#: (against runtimes that take the argmax) all mean argmax; ``kwargs`` may still set them.
_ARGMAX_ONLY: dict[str, object] = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1, "suppress_tokens": None,
    "begin_suppress_tokens": None, "bad_words_ids": None, "sequence_bias": None, "min_length": 0,
    "min_new_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
}  # fmt: skip


def model_generate(model: nn.Module, **kwargs: Any) -> Any:
    """``model.generate(**kwargs)`` (transformers' or peft's), without peft's false alarms, without
    what the model's ``generation_config`` sets against argmax (:data:`_ARGMAX_ONLY`; ``kwargs``
    may still set it), and with peft's prompt learning given its KV cache (:func:`_cache_under_peft_s_name`)."""
    with peft_false_alarms_off(), _cache_under_peft_s_name(model):
        # torch types a module's attributes as Tensor | Module; generate is a method here
        return cast("Callable[..., Any]", model.generate)(**{**_ARGMAX_ONLY, **kwargs})


def is_prompt_learning(model: nn.Module) -> bool:
    """Whether ``model`` is a peft prompt or prefix tuning model (virtual tokens, no adapted weights)."""
    return bool(getattr(model, "_is_prompt_learning", False))


@contextmanager
def _cache_under_peft_s_name(model: nn.Module) -> Iterator[None]:
    """Inside, a peft prompt-learning model's generation finds the KV cache where peft looks for it.

    transformers 5 hands the model its KV cache as ``cache``; peft 0.21's ``generate`` still looks
    for ``past_key_values``, finds none at every step and so starts over: prefix tuning's prefix went
    in as a second, ignored cache (every answer was the base model's) and prompt tuning's virtual
    tokens were prepended again before every new token (only the first one came out right; both
    tested). Renaming the cache in what the base model prepares for each step gives peft's own
    logic back (the prefix injected once, positions offset past it); the model's forward still
    takes the old name. Other models generate as they are.
    """
    base_prepare = getattr(model, "base_model_prepare_inputs_for_generation", None)
    if not is_prompt_learning(model) or base_prepare is None:
        yield
        return

    def prepare(*args: Any, **kwargs: Any) -> Any:
        inputs = base_prepare(*args, **kwargs)
        if "cache" in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    peft_model = cast(Any, model)  # torch types a module's attributes as Tensor | Module
    peft_model.base_model_prepare_inputs_for_generation = prepare
    try:
        yield
    finally:
        peft_model.base_model_prepare_inputs_for_generation = base_prepare
        # peft's generate ends by setting the base model's prepare to the one kept above: the wrapper
        peft_model.base_model.prepare_inputs_for_generation = base_prepare


def _train_whole_head(config: PeftConfig, model: nn.Module) -> None:
    """A classifier's whole new head trains and saves as itself, adapted by no adapter: peft's
    defaults name only ``classifier`` and ``score``, which left DistilBERT's ``pre_classifier``
    and DeBERTa's ``pooler`` frozen at random weights (and LoRA's all-linear adapted
    ``pre_classifier``, which peft then refused to save whole)."""
    from finjust.models.classifier import head_module_paths, head_modules

    settings = cast(Any, config)  # both live on the method's own config class (LoraConfig, IA3Config)
    settings.modules_to_save = head_modules(model)
    if hasattr(settings, "exclude_modules"):
        settings.exclude_modules = head_module_paths(model)


class PeftMethod(Method):
    """A method whose trainable part is a peft adapter beside the frozen pretrained weights."""

    artifact_dir = "adapter"
    #: the name used in messages, e.g. "LoRA"
    label: ClassVar[str]
    #: ``peft_type`` written in the adapter_config.json this method saves (e.g. "LORA")
    peft_type: ClassVar[str]

    @abstractmethod
    def peft_config(self, model: nn.Module, options: Any) -> PeftConfig:
        """The peft configuration for ``model`` under ``options``."""

    def apply(self, model: nn.Module, options: Any) -> nn.Module:
        from peft import get_peft_model

        try:  # peft checks options both in its config classes (IA3's subset rule) and when applying
            config = self.peft_config(model, options)
            config.task_type = task_type_of(model)
            if config.task_type == "SEQ_CLS":
                _train_whole_head(config, model)
            with peft_false_alarms_off():
                return get_peft_model(model, config)
        except (ValueError, TypeError) as exc:
            raise MethodError(f"cannot apply {self.label}: {exc}") from exc

    def save(self, model: nn.Module, folder: Path) -> None:
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            raise MethodError(f"{self.label} save expects the model returned by apply()")
        model.save_pretrained(str(folder))  # peft declares a str (it only joins paths onto it)

    def load(self, base: nn.Module, folder: Path) -> nn.Module:
        from peft import PeftModel
        from peft.utils.constants import SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME

        config_file = folder / "adapter_config.json"
        if not config_file.is_file():
            raise MethodError(f"{folder} holds no {self.label} adapter (adapter_config.json missing)")
        if not any((folder / name).is_file() for name in (SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME)):
            # else peft takes the folder for a Hub repository and fails on its name
            raise MethodError(f"{folder} holds no {self.label} adapter weights ({SAFETENSORS_WEIGHTS_NAME} missing)")
        found = json.loads(config_file.read_text()).get("peft_type")
        if found != self.peft_type:
            raise MethodError(f"{folder} holds a {found} adapter, not a {self.label} one ({self.peft_type})")
        with peft_false_alarms_off():
            return PeftModel.from_pretrained(base, folder)

    def merge(self, model: nn.Module) -> nn.Module:
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            raise MethodError(f"{self.label} merge expects a model with a {self.label} adapter")
        return model.merge_and_unload()
