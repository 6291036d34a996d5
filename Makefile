# callq developer entry points. `make up` runs the stack with the demo; `make test` is what CI runs.
# Everything the targets need is installed here (venv, redis-server, docker-compose, luacheck, chromium, ffmpeg): a fresh machine
# needs only python3, make and apt. Python packages come from requirements.lock (`make lock` regenerates it), so
# every machine, CI and the image run the same versions.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock
TYPED := api tasks workers callq simulator

# apt-get as root, through sudo otherwise; says what to run by hand when neither works.
define apt_install
	if ! command -v apt-get >/dev/null; then \
		echo "make: $(1) is missing and there is no apt-get here; install $(1) yourself" >&2; exit 1; \
	elif [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y $(2) $(1); \
	elif command -v sudo >/dev/null; then \
		sudo DEBIAN_FRONTEND=noninteractive apt-get update && \
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y $(2) $(1); \
	else \
		echo "make: $(1) is missing; as root run: apt-get install -y $(2) $(1)" >&2; exit 1; \
	fi
endef

.PHONY: up test lint typecheck lint-lua lock bench bench-smoke chaos clean setup redis-server docker-compose chromium luacheck ffmpeg

up: setup
	$(VENV)/bin/callq up --demo

# CI runs this (.ci/run): ruff, mypy --strict, the Lua lint, then the whole test suite, stopping at the first failure.
test: setup docker-compose chromium ffmpeg
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory lint-lua
	$(VENV)/bin/pytest -m "not bench_smoke"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy --strict $(TYPED)

# The Redis scripts (workers/lua) through luacheck, with the globals Redis gives a script.
lint-lua: $(STAMP) luacheck
	$(PY) -m workers.lualint

# Regenerate the lock files from pyproject.toml (after changing a dependency there; add --upgrade to move every pin
# to the newest release its range allows: `make lock PIP_COMPILE_ARGS=--upgrade`). requirements.lock: runtime and
# dev (make, CI); requirements-runtime.lock: runtime only (the Docker image).
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links $(PIP_COMPILE_ARGS)
lock: $(STAMP)
	$(PIP_COMPILE) --extra dev -o $(LOCK) pyproject.toml
	$(PIP_COMPILE) -o $(RUNTIME_LOCK) pyproject.toml

# The full benchmark suite, after a smoke run of every scenario in quick mode (left out of make test for time).
bench: bench-smoke
	$(VENV)/bin/callq bench

bench-smoke: setup
	$(VENV)/bin/pytest -m bench_smoke tests/bench

# The chaos scenarios at long scale (minutes); writes tests/chaos/report.md.
chaos: setup
	$(VENV)/bin/callq chaos

setup: $(STAMP) redis-server

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when the lock (or the project's metadata) changed; the editable install picks up code changes by
# itself. The lock holds every dependency, so callq itself goes in without resolving any.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -r $(LOCK)
	$(PY) -m pip install --disable-pip-version-check --no-deps -e .
	touch $@

redis-server:
	@command -v redis-server >/dev/null || { $(call apt_install,redis-server,); }

# Only the compose-file test needs it (`docker-compose config` validates without a Docker engine).
docker-compose:
	@command -v docker-compose >/dev/null || { $(call apt_install,docker-compose,--no-install-recommends); }

# Debian's lua-check package provides luacheck, which workers.lualint runs.
luacheck:
	@command -v luacheck >/dev/null || { $(call apt_install,lua-check,--no-install-recommends); }

# The operator-page test drives Debian's Chromium with Playwright (Playwright's own browser download cannot work here).
chromium:
	@command -v chromium >/dev/null || { $(call apt_install,chromium,); }

# The simulator encodes MP3 and MP4 recording files with Debian's ffmpeg (simulator/encoder.py); their tests need it
# (ffprobe, in the same package, checks the files). `make up` does not: its demo records WAV, and a simulator without
# ffmpeg fails an mp3/mp4 start with a StartRecordingFailed saying what to install.
ffmpeg:
	@command -v ffmpeg >/dev/null || { $(call apt_install,ffmpeg,--no-install-recommends); }

clean:
	rm -rf .callq .pytest_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
