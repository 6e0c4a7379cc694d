# One entry point for every user-facing command; creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
GPU    ?=
COMMA  := ,
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)$(GPU)
NAME   ?= softmax
ARGS   ?=

.PHONY: exp test verify bench soak hostile docs ps devices install peers clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test$(if $(GPU),$(COMMA)$(GPU))]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

exp: $(STAMP)
	$(PY) -m jaxdl exp $(NAME) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 $(ARGS)

verify: $(STAMP)
	$(PY) -m jaxdl verify $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

docs: $(STAMP)
	$(PY) -m pdoc jaxdl -o docs/api
	@echo "API reference: docs/api/index.html"

soak: $(STAMP)
	$(PY) -m benchmarks.soak $(ARGS)

hostile: $(STAMP)
	$(PY) -m benchmarks.hostile $(ARGS)

ps: $(STAMP)
	$(PY) -m jaxdl ps $(ARGS)

devices: $(STAMP)
	$(PY) -m jaxdl devices $(ARGS)

peers: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,peers]'

clean:
	rm -rf $(VENV) runs .pytest_cache
