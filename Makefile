# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs torch + vlp with its extras first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vlp-installed
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
SITE_DIR ?= $(VENV)/site

.PHONY: install demo test test-slow lint typecheck docs clean bench

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,docs]' $(TORCH_PIN)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/train_clip.py --plot $(VENV)/demo_curves.png

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 \
	$(PY) -m mkdocs build --strict -q -d $(SITE_DIR)

# TRITON_INTERPRET=1 makes every Triton path run under the interpreter on CPU tensors.
test: lint typecheck docs
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
