"""Fixtures for the simulator tests (helpers live in simharness.py, importable by the test modules)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.communication.callautomation import CallAutomationClient

from simulator.app import create_app
from simulator.settings import Settings

# The test modules import simharness as a top-level module; put this directory on sys.path explicitly so that
# works under any pytest import mode (this directory has no __init__.py: "tests.simulator" would shadow the
# real "simulator" package under the default mode).
sys.path.insert(0, str(Path(__file__).parent))
from eghook import Hook
from simharness import KEY, Receiver, ServerThread, Sim

from tests.conftest import free_port


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="session")
def sim_server() -> Iterator[tuple[str, Settings]]:
    port = free_port()
    settings = Settings(access_key=KEY, port=port, callback_backoff_s=0.01, recording_file_delay_s=0.05)
    with ServerThread(create_app(settings), port):
        yield f"http://127.0.0.1:{port}", settings


@pytest.fixture
def sim(sim_server: tuple[str, Settings], receiver: Receiver) -> Iterator[Sim]:
    base, settings = sim_server
    handle = Sim(base, settings, receiver)
    assert handle.admin.post("/_sim/reset").status_code == 200
    yield handle
    handle.admin.post("/_sim/reset")
    handle.admin.close()


@pytest.fixture
def client(sim: Sim) -> Iterator[CallAutomationClient]:
    with sim.client() as c:
        yield c
