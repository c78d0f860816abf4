"""The weight dtypes and devices a model loads with, by name: the recipe's ``model.dtype`` and
``model.device`` choices, here rather than in :mod:`finjust.models.load` so that reading a
recipe imports neither torch's model code nor transformers."""

#: weight dtypes: "auto" is bfloat16 where the hardware has it
DTYPES = ("auto", "bfloat16", "float32")
DEVICES = ("auto", "cpu", "cuda")
