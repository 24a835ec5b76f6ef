"""Drives the official `e2b-code-interpreter` Python SDK against a real burrow server.

Run by tests/code_interpreter.rs with E2B_DOMAIN, E2B_API_KEY, SSL_CERT_FILE, BURROW_URL and
BURROW_KEY set. Prints one JSON object per line: {"step": name, "ok": bool, "value"|"error": ...};
it never stops early, so the Rust side sees every step's outcome.
"""

import importlib.metadata
import json
import os
import socket
import time
import urllib.request

from e2b_code_interpreter import Sandbox
from e2b.exceptions import TimeoutException

# `*.localhost` is loopback (RFC 6761), but Debian's getaddrinfo does not know it.
_getaddrinfo = socket.getaddrinfo


def _loopback_localhost(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_localhost


def emit(step, ok, **fields):
    print(json.dumps({"step": step, "ok": ok, **fields}, default=str), flush=True)


def run(step, fn):
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - every outcome is reported, not raised
        emit(step, False, error=type(e).__name__, message=str(e)[:2000])
        return None
    emit(step, True, value=value)
    return value


def native_state(sandbox_id):
    request = urllib.request.Request(
        f"{os.environ['BURROW_URL']}/v1/sandboxes/{sandbox_id}",
        headers={"Authorization": f"Bearer {os.environ['BURROW_KEY']}"},
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)["state"]


def text_of(execution):
    return execution.text


def main():
    emit("sdk", True, value=importlib.metadata.version("e2b-code-interpreter"))
    started = time.time()
    # No template argument: the SDK's default `code-interpreter-v1` maps to `code-interpreter`.
    sbx = run("create", lambda: Sandbox.create(timeout=300, envs={"FROM_CREATE": "yes"}))
    if sbx is None:
        return
    emit("create_seconds", True, value=round(time.time() - started, 2))

    def state():
        first = sbx.run_code("x = 41")
        second = sbx.run_code("x + 1")
        return {
            "first_results": len(first.results),
            "text": second.text,
            "count": second.execution_count,
        }

    run("state", state)

    def streams():
        out, err = [], []
        execution = sbx.run_code(
            "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)",
            on_stdout=lambda m: out.append(m.line),
            on_stderr=lambda m: err.append(m.line),
        )
        return {
            "stdout": out,
            "stderr": err,
            "logs_stdout": execution.logs.stdout,
            "logs_stderr": execution.logs.stderr,
        }

    run("streams", streams)

    def error():
        seen = []
        execution = sbx.run_code("1 / 0", on_error=seen.append)
        e = execution.error
        return {
            "name": e.name,
            "value": e.value,
            "traceback_mentions": "ZeroDivisionError" in e.traceback,
            "callback": len(seen),
        }

    run("error", error)
    run("envs", lambda: sbx.run_code("import os\nos.environ['GREETING']", envs={"GREETING": "hello"}).text)
    run("create_envs", lambda: sbx.run_code("os.environ.get('FROM_CREATE')").text)
    run("envs_restored", lambda: sbx.run_code("os.environ.get('GREETING', 'unset')").text)

    def chart():
        execution = sbx.run_code(
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
        )
        return {"png": any(r.png for r in execution.results), "error": str(execution.error)}

    run("chart", chart)

    def data_frame():
        execution = sbx.run_code("import pandas as pd\nint(pd.DataFrame({'a': [1, 2]}).a.sum())")
        return execution.text

    run("pandas", data_frame)

    def contexts():
        ctx = sbx.create_code_context(cwd="/tmp")
        in_ctx = sbx.run_code("import os\ny = 7\nos.getcwd()", context=ctx).text
        isolated = sbx.run_code("y").error
        listed = [c.id for c in sbx.list_code_contexts()]
        sbx.restart_code_context(ctx)
        after_restart = sbx.run_code("y", context=ctx).error
        sbx.remove_code_context(ctx)
        listed_after = [c.id for c in sbx.list_code_contexts()]
        refused = {}
        for bad in ["/root", "/no/such/dir"]:
            try:
                sbx.create_code_context(cwd=bad)
                refused[bad] = "created"
            except Exception as e:  # the SDK's exception for a 400
                refused[bad] = str(e)
        return {
            "refused": refused,
            "cwd": in_ctx,
            "isolated": isolated.name if isolated else None,
            "listed": ctx.id in listed,
            "restart_clears": after_restart.name if after_restart else None,
            "removed": ctx.id not in listed_after,
        }

    run("contexts", contexts)

    def timeout():
        began = time.time()
        try:
            sbx.run_code("import time\ntime.sleep(60)\nx = 0", timeout=2)
            outcome = "returned"
        except TimeoutException:
            outcome = "TimeoutException"
        after = time.time() - began
        # The interrupted cell must not keep the kernel busy (nor get to `x = 0`).
        began = time.time()
        value = sbx.run_code("x").text
        return {"outcome": outcome, "after_s": round(after, 1), "x": value,
                "next_s": round(time.time() - began, 1)}

    run("timeout", timeout)

    def pause_connect():
        sbx.pause()
        paused = native_state(sbx.sandbox_id)
        resumed = Sandbox.connect(sbx.sandbox_id)
        return {
            "native_paused": paused,
            "x": resumed.run_code("x").text,
            "native_after": native_state(sbx.sandbox_id),
        }

    run("pause_connect", pause_connect)

    def deep_standby():
        # burrow's deep standby (CRIU checkpoint to disk: no process left), then E2B connect.
        request = urllib.request.Request(
            f"{os.environ['BURROW_URL']}/v1/sandboxes/{sbx.sandbox_id}/standby",
            data=json.dumps({"deep": True}).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {os.environ['BURROW_KEY']}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request) as response:
            power = json.load(response).get("power", {})
        began = time.time()
        resumed = Sandbox.connect(sbx.sandbox_id)
        return {
            "tier": power.get("tier"),
            "x": resumed.run_code("x").text,
            "resume_s": round(time.time() - began, 2),
        }

    run("deep_standby", deep_standby)

    def kernel_death():
        died = sbx.run_code("import os\nos._exit(1)").error
        after = sbx.run_code("'fresh kernel'")
        return {"error": died.name if died else None, "after": after.text}

    run("kernel_death", kernel_death)
    run("kill", lambda: sbx.kill())


main()
