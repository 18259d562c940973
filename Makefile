# Two commands do all set-up on a fresh machine: `make demo` and `make test` (see README.md).
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: test demo lint bench evaluate models-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check device tools tests
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) tools/demo.py

evaluate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,tools]'
	$(PY) tools/evaluate.py --pairs ../shared/faces/lfw_dev_meta/pairsDevTrain.txt --out reports/lfw_dev

models-check: $(STAMP)
	$(PY) tools/build_models.py --check

clean:
	rm -rf $(VENV) build reports
