"""The recipe's sections: plain dataclasses whose field metadata carries help texts and checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finjust.data.findings import DEFAULT_FAIL_ON, GATED
from finjust.data.formats import RECORD_FORMATS
from finjust.data.templates import TOO_LONG
from finjust.methods.registry import get_method
from finjust.models.choices import DEVICES, DTYPES

#: ``train.scheduler``'s choices, each the name transformers' ``get_scheduler`` knows it by
#: (its "constant" has no warmup: finjust's constant warms up like the others)
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def _doc(help_text: str, **checks: Any) -> dict[str, Any]:
    """Field metadata: the ``--help`` text plus checks (choices, gt, ge, lt, le, nonempty)."""
    return {"help": help_text, **checks}


@dataclass
class ModelSection:
    """``model:`` which pretrained model to start from."""

    name: str = field(metadata=_doc(
        "Short name of a model an installed package ships (e.g. smollm2-135m-instruct), "
        "a local Hugging Face folder, or a .gguf file.", nonempty=True))
    dtype: str = field(default="auto", metadata=_doc(
        "Weight dtype; auto picks bfloat16 where supported.", choices=DTYPES))
    device: str = field(default="auto", metadata=_doc(
        "Where to train; auto uses cuda when available.", choices=DEVICES))


@dataclass
class QualitySection:
    """``data.quality:`` which data findings stop a run; every other finding only warns."""

    fail_on: list[str] = field(default_factory=lambda: list(DEFAULT_FAIL_ON), metadata=_doc(
        "Findings that stop finjust train (and make finjust data check exit 1): "
        + ", ".join(GATED) + "."))
    ignore: list[str] = field(default_factory=list, metadata=_doc(
        "Findings neither reported as warnings nor failing."))
    near_duplicate_threshold: float = field(default=0.8, metadata=_doc(
        "Estimated Jaccard similarity (character 5-grams, MinHash) from which two records are "
        "near-duplicates.", gt=0, le=1))
    redact_pii: bool = field(default=False, metadata=_doc(
        "Replace PII found in the data by placeholders ([EMAIL], [PHONE], ...) before training; "
        "pii findings then no longer fail the gate."))
    max_listed: int = field(default=20, metadata=_doc(
        "How many records each finding lists in the report.", gt=0))


@dataclass
class DataSection:
    """``data:`` the examples to train and evaluate on."""

    train: str | list[Any] = field(metadata=_doc(
        "Training data: a file or folder, or a list of them, each a path or "
        "{path, weight, split} (weight 2 repeats a source's training records twice).", nonempty=True))
    validation: str | None = field(default=None, metadata=_doc(
        "Path of the validation file; null splits validation_fraction off train.", nonempty=True))
    test: str | None = field(default=None, metadata=_doc(
        "Path of the test file; null splits test_fraction off train.", nonempty=True))
    format: str = field(default="auto", metadata=_doc(
        "Record format; auto detects it from each record's fields.", choices=("auto", *RECORD_FORMATS.names())))
    columns: dict[str, str] = field(default_factory=dict, metadata=_doc(
        "Column renames {format field: column in your files}, e.g. {instruction: question, output: answer}."))
    validation_fraction: float = field(default=0.1, metadata=_doc(
        "Share of train held out for validation when no validation file is given.", ge=0, lt=1))
    test_fraction: float = field(default=0.1, metadata=_doc(
        "Share of train held out for testing, used only when no test file is given.", ge=0, lt=1))
    validation_count: int | None = field(default=None, metadata=_doc(
        "Validation records to hold out (instead of validation_fraction).", ge=0))
    test_count: int | None = field(default=None, metadata=_doc(
        "Test records to hold out (instead of test_fraction).", ge=0))
    stratify_by: str | None = field(default=None, metadata=_doc(
        "Keep each value's share in every split: 'label' or a record field (e.g. topic)."))
    group_by: str | None = field(default=None, metadata=_doc(
        "A record field whose records all land in one split (e.g. the document an example came from)."))
    max_length: int = field(default=1024, metadata=_doc(
        "Longest example in tokens; longer ones are handled as too_long says.", gt=0))
    too_long: str = field(default="truncate", metadata=_doc(
        "Examples over max_length: truncate (raw text is cut into max_length windows), drop, or error.",
        choices=TOO_LONG))
    system_prompt: str | None = field(default=None, metadata=_doc(
        "System message put before conversations that have none."))
    quality: QualitySection = field(default_factory=QualitySection, metadata=_doc(
        "The quality gate run before training (see finjust data check)."))


@dataclass
class MethodSection:
    """``method:`` which weights train; options are written flat beside ``name``."""

    name: str = field(default="lora", metadata=_doc("Fine-tuning method (a registered name)."))
    options: Any = field(default_factory=dict, metadata=_doc(
        "The method's options (its options dataclass once validated)."))


@dataclass
class TrainSection:
    """``train:`` the optimisation loop."""

    epochs: float = field(default=3.0, metadata=_doc("Passes over the training data (a fraction rounds the "
                                                     "step count up: 1.5 epochs of 3 steps run 5).", gt=0))
    max_steps: int | None = field(default=None, metadata=_doc(
        "Optimizer steps to run; overrides epochs when set.", gt=0))
    lr: float | None = field(default=None, metadata=_doc(
        "Peak learning rate; null uses the method's default.", gt=0))
    batch_size: int = field(default=8, metadata=_doc("Examples per micro-batch.", gt=0))
    grad_accum: int = field(default=1, metadata=_doc(
        "Micro-batches accumulated per optimizer step.", gt=0))
    warmup_ratio: float = field(default=0.05, metadata=_doc(
        "Share of the steps spent warming the learning rate up.", ge=0, lt=1))
    scheduler: str = field(default="cosine", metadata=_doc(
        "Learning-rate schedule after warmup.", choices=tuple(SCHEDULERS)))
    weight_decay: float = field(default=0.0, metadata=_doc("AdamW weight decay.", ge=0))
    max_grad_norm: float = field(default=1.0, metadata=_doc("Gradient clipping norm.", gt=0))
    eval_every: int | None = field(default=None, metadata=_doc(
        "Evaluate every this many steps; null evaluates once per epoch.", gt=0))
    save_every: int | None = field(default=None, metadata=_doc(
        "Save a checkpoint every this many steps (and at any evaluation that finds a new best); "
        "null saves at every evaluation.", gt=0))
    patience: int | None = field(default=2, metadata=_doc(
        "Evaluations without validation-loss improvement before stopping early; "
        "null disables early stopping.", gt=0))
    seed: int = field(default=42, metadata=_doc("Random seed for data order and init.", ge=0, le=2**32 - 1))
    threads: int | None = field(default=None, metadata=_doc(
        "CPU threads for torch; null keeps torch's default.", gt=0, le=4096))
    compile: bool | None = field(default=None, metadata=_doc(
        "torch.compile the model's repeated blocks for the training steps; null compiles runs of "
        "200+ steps on a CPU with a C++ compiler (compiling costs 20-35 s, then steps run ~1.2x "
        "faster)."))
    gradient_checkpointing: bool | None = field(default=None, metadata=_doc(
        "Recompute each block's activations in backward instead of keeping them (less memory, "
        "28% slower steps on the training benchmark); null turns it on when the largest step's "
        "activations would take more than half of the free memory."))
    forgetting_guard: float | None = field(default=None, metadata=_doc(
        "Minimum general-knowledge retention (e.g. 0.9): evaluations below it never become the "
        "best checkpoint; null disables the probe during training.", gt=0))
    forgetting_action: str = field(default="stop", metadata=_doc(
        "When retention falls below forgetting_guard: stop training, or keep training and only "
        "pick the best checkpoint among those within the budget.", choices=("stop", "best")))
    replay: float = field(default=0.0, metadata=_doc(
        "Mitigation: general-text passages mixed into training, as a share of the training "
        "examples (0.1 adds one passage per ten examples).", ge=0, le=10))
    l2sp: float = field(default=0.0, metadata=_doc(
        "Mitigation: L2-SP strength, a penalty l2sp/2 * ||w - w_pretrained||^2 on the trained "
        "weights that keeps them near where they started (a classifier's new head: near zero).", ge=0))


@dataclass
class EvalSection:
    """``eval:`` the scorecard computed on the test split."""

    metrics: list[str] = field(default_factory=lambda: ["exact_match", "token_f1", "rouge_l"],
                               metadata=_doc("Metrics computed on generated answers."))
    max_new_tokens: int = field(default=96, metadata=_doc("Longest generated answer.", gt=0))
    batch_size: int = field(default=16, metadata=_doc("Prompts generated at once.", gt=0))
    max_examples: int | None = field(default=None, metadata=_doc(
        "Evaluate at most this many test examples; null uses all.", gt=0))
    generate: bool = field(default=True, metadata=_doc(
        "Generate answers and score them; false reports only the loss."))
    retention: bool = field(default=True, metadata=_doc(
        "Score general-knowledge retention (forgetting) of base and tuned on the shipped probe."))
    metric_options: dict = field(default_factory=dict, metadata=_doc(
        "Options per metric, e.g. {brand_voice: {required: ['Ride on!']}, format: {regex: '...'}}."))
    bootstrap_samples: int = field(default=1000, metadata=_doc(
        "Bootstrap resamples behind each confidence interval.", ge=100))
    confidence: float = field(default=0.95, metadata=_doc(
        "Confidence level of the intervals on the scorecard.", gt=0, lt=1))


@dataclass
class OutputSection:
    """``output:`` where the run is written."""

    dir: str = field(metadata=_doc("Run folder for checkpoints, results and logs.", nonempty=True))
    overwrite: bool = field(default=False, metadata=_doc("Replace an existing run folder."))


@dataclass(kw_only=True)
class Recipe:
    """A whole validated recipe."""

    model: ModelSection
    data: DataSection
    method: MethodSection = field(default_factory=MethodSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output: OutputSection

    @property
    def learning_rate(self) -> float:
        """``train.lr``, or the method's ``default_lr`` when the recipe gives none."""
        if self.train.lr is not None:
            return self.train.lr
        return float(get_method(self.method.name).default_lr)

    def writing_to(self, folder: str | Path, overwrite: bool | None = None) -> Recipe:
        """This recipe with ``output.dir`` set to ``folder`` (absolute), and ``overwrite`` if given.

        For paths the CLI takes as arguments: an override string would go through YAML, where
        " #" starts a comment."""
        output = dataclasses.replace(self.output, dir=str(Path(folder).absolute()),
                                     overwrite=self.output.overwrite if overwrite is None else overwrite)  # fmt: skip
        return dataclasses.replace(self, output=output)


SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "method": MethodSection,
    "train": TrainSection, "eval": EvalSection, "output": OutputSection,
}
