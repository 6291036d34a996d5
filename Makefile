# callq developer entry points. `make up` runs the stack with the demo; `make test` is what CI runs.
# Everything the targets need is installed here (venv, redis-server, docker-compose): a fresh machine needs only
# python3, make and apt.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

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

.PHONY: up test lint bench chaos clean setup redis-server docker-compose chromium

up: setup
	$(VENV)/bin/callq up --demo

test: setup docker-compose chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/callq bench

# The chaos scenarios at long scale (minutes); writes tests/chaos/report.md.
chaos: setup
	$(VENV)/bin/callq chaos

setup: $(STAMP) redis-server

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when the dependencies may have changed; the editable install picks up code changes by itself.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

redis-server:
	@command -v redis-server >/dev/null || { $(call apt_install,redis-server,); }

# Only the compose-file test needs it (`docker-compose config` validates without a Docker engine).
docker-compose:
	@command -v docker-compose >/dev/null || { $(call apt_install,docker-compose,--no-install-recommends); }

# The operator-page test drives Debian's Chromium with Playwright (Playwright's own browser download cannot work here).
chromium:
	@command -v chromium >/dev/null || { $(call apt_install,chromium,); }

clean:
	rm -rf .callq .pytest_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
