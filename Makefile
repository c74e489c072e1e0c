# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both run `make setup` first; it is idempotent and prints what it did.
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: setup test test-unit demo bench typecheck doctor clean help

help:
	@echo "make demo       set up if needed, then run the demo topology end to end"
	@echo "make test       set up if needed, then run the whole test suite (ARGS=... to pytest)"
	@echo "make test-unit  the tests that need no root, no BPF and no network namespaces"
	@echo "make bench      run every benchmark; results in bench/results/"
	@echo "make doctor     check this machine: kernel, BTF, bcc, XDP, test-run, etcd"
	@echo "make typecheck  mypy --strict over the packages"
	@echo "make setup      apt packages, kernel headers link, bpffs, venv, pip, Cython"

setup:
	@scripts/setup.sh

test: setup
	$(PY) -m pytest $(ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(ARGS)

demo: setup
	$(PY) -m mep.demo $(ARGS)

bench: setup
	$(PY) -m bench $(ARGS)

doctor: setup
	$(VENV)/bin/mep doctor

typecheck: setup
	$(PY) -m mypy

clean:
	rm -rf build mep/dataplane/_fastpath*.so mep/dataplane/_fastpath.c mep/mm5/mm5_pb2.py mep/mm5/mm5_pb2.pyi .pytest_cache .mypy_cache .hypothesis
