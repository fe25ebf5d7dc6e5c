# `make test`: the same set-up as `python launch.py` (venv, install, default model) plus the test and trackers extras
# and a browser for the end-to-end tests, then the whole suite (slow and e2e tests included). The gguf extra
# (llama-cpp-python, compiled from source) is built in the background meanwhile (tests/llamacpp_build.py) and
# installed by the tests that need it, which run last.
PYTHON ?= python3
ifdef VIRTUAL_ENV
RUN_PY := python
else
RUN_PY := .venv/bin/python
endif

.PHONY: test setup browser lint format bench

setup:
	$(PYTHON) launch.py --setup-only --extras test,trackers

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk fonts-noto-color-emoji >/dev/null) \
	      || echo "make: could not install chromium; the e2e tests will skip and say why"; \
	  else echo "make: chromium is not installed and apt-get is not usable; the e2e tests will skip and say why"; fi; }

test:
	$(PYTHON) tests/llamacpp_build.py start
	$(MAKE) setup browser
	$(RUN_PY) -m pytest

lint:
	$(RUN_PY) -m ruff check app tests bench launch.py
	$(RUN_PY) -m ruff format --check app tests bench launch.py

format:
	$(RUN_PY) -m ruff format app tests bench launch.py
	$(RUN_PY) -m ruff check --fix app tests bench launch.py
