"""Acceptance harness: the official e2b Python SDK (debug mode) against burrow's envd agent.

The SDK in debug mode (E2B_DEBUG=true) talks to http://localhost:49983. `start_envd_endpoint`
is the single place that provides that endpoint; set BURROW_E2B_TARGET=external to use
something already listening there (e.g. a port forwarded into a real sandbox).
"""

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("E2B_DEBUG", "true")
os.environ.setdefault("E2B_API_KEY", "e2b_" + "0" * 40)

from e2b import Sandbox  # noqa: E402  (env must be set first)

ENVD_PORT = 49983
REPO = Path(__file__).resolve().parents[2]
EXTERNAL_TARGET = bool(os.environ.get("BURROW_E2B_TARGET"))
# The default user of the envd under test: a host user for the local agent, `user` in sandboxes.
TEST_USER = os.environ.get("BURROW_E2B_USER") or ("user" if EXTERNAL_TARGET else "burrowtest")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)


def start_envd_endpoint():
    """Makes envd reachable on localhost:49983; returns a stop() callable.

    Replace this function to point the suite at a real sandbox.
    """
    if EXTERNAL_TARGET:
        if not _port_open(ENVD_PORT):
            pytest.exit(f"BURROW_E2B_TARGET is set but nothing listens on localhost:{ENVD_PORT}")
        return lambda: None
    if _port_open(ENVD_PORT):
        pytest.exit(f"localhost:{ENVD_PORT} is busy; stop it or set BURROW_E2B_TARGET=external")
    agent = os.environ.get("BURROW_AGENT_BIN", str(REPO / "target" / "debug" / "burrow-agent"))
    if not Path(agent).exists():
        pytest.exit(f"{agent} not found; run `cargo build -p burrow-agent` first")
    _ensure_user(TEST_USER)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BURROW_LISTEN": f"127.0.0.1:{ENVD_PORT}",
        "BURROW_DEFAULT_USER": TEST_USER,
        "BURROW_SANDBOX_ID": "debug_sandbox_id",
        "BURROW_TEMPLATE": "base",
        "BURROW_ENV_JSON": '{"BURROW_GLOBAL":"yes"}',
    }
    proc = subprocess.Popen([agent], env=env)
    deadline = time.time() + 10
    while not _port_open(ENVD_PORT):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.exit("burrow-agent did not start listening")
        time.sleep(0.05)

    def stop():
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()

    return stop


@pytest.fixture(scope="session")
def envd():
    stop = start_envd_endpoint()
    yield
    stop()


@pytest.fixture
def sandbox(envd):
    return Sandbox.create()


@pytest.fixture
def home():
    if EXTERNAL_TARGET:
        return os.environ.get("BURROW_E2B_HOME", f"/home/{TEST_USER}")
    return pwd.getpwnam(TEST_USER).pw_dir


@pytest.fixture
def workdir(sandbox, home):
    """A fresh directory in the user's home, removed afterwards."""
    path = f"{home}/e2b-test-{uuid.uuid4().hex[:8]}"
    sandbox.files.make_dir(path)
    yield path
    sandbox.files.remove(path)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(REPO / "tests" / "e2b" / ".pytest_cache", ignore_errors=True)
