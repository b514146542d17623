# Every target installs what it needs, so each works on a fresh machine with only Python 3.11 + pip.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch is pinned through constraints.txt: on these machines 2.13.0 is a CPU wheel already on disk;
# any other torch spec would pull gigabytes of CUDA packages.
PIP_INSTALL := $(PIP) install --quiet --constraint constraints.txt

.PHONY: install system-deps test test-unit test-integration test-e2e screenshots lint format demo up bench clean

install:
	$(PIP) install --quiet torch==2.13.0
	$(PIP_INSTALL) -e ".[test]"

# Debian packages the tests need: a real redis-server for the external-Redis tests, a real
# headless browser for the dashboard tests, strace to see that store writes are flushed (fsync).
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v docker-compose >/dev/null || ! command -v strace >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			redis-server chromium chromium-driver docker-compose strace >/dev/null; \
	fi

test: install system-deps
	$(PYTHON) -m pytest

test-unit: install
	$(PYTHON) -m pytest tests/unit

test-integration: install system-deps
	$(PYTHON) -m pytest tests/integration

test-e2e: install system-deps
	$(PYTHON) -m pytest tests/e2e

# Refresh the dashboard screenshots in docs/img (the browser tests write them elsewhere otherwise).
screenshots: install system-deps
	PHASESCOPE_REFRESH_SCREENSHOTS=1 $(PYTHON) -m pytest tests/e2e/test_dashboard.py

# Every package: the library, the three programs on it, the tests and the benchmarks.
PACKAGES := phasescope backend workers frontend tests benchmarks

# Lint and formatting, checked (what a reviewer runs); `make format` applies both.
lint: install
	$(PYTHON) -m ruff check $(PACKAGES)
	$(PYTHON) -m ruff format --check $(PACKAGES)

format: install
	$(PYTHON) -m ruff format $(PACKAGES)
	$(PYTHON) -m ruff check --fix $(PACKAGES)

demo: install
	$(PYTHON) -m phasescope.cli up --demo

up: install
	$(PYTHON) -m phasescope.cli up

bench: install
	$(PYTHON) -m benchmarks.run

clean:
	rm -rf build dist *.egg-info .pytest_cache phasescope-out
