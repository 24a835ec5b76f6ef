"""Drives the official `e2b` Python SDK end to end against a real burrow server.

Run by tests/e2b_sdk.rs with E2B_DOMAIN, E2B_API_KEY and SSL_CERT_FILE set (the SDK then talks
to https://api.{domain} and https://49983-{id}.{domain} on port 443). Prints one JSON object per
line: {"step": name, "ok": bool, "value"|"error": ...}; it never stops early, so the Rust side
sees every step's outcome.
"""

import json
import os
import time
import urllib.request
from datetime import datetime, timezone

from e2b import Sandbox, SandboxQuery, SandboxState


def emit(step, ok, **fields):
    print(json.dumps({"step": step, "ok": ok, **fields}, default=str), flush=True)


def run(step, fn):
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - every outcome is reported, not raised
        emit(step, False, error=type(e).__name__, message=str(e)[:500])
        return None
    emit(step, True, value=value)
    return value


def native_state(sandbox_id):
    """The sandbox's state on burrow's native API (BURROW_URL, BURROW_KEY): shows real standby."""
    request = urllib.request.Request(
        f"{os.environ['BURROW_URL']}/v1/sandboxes/{sandbox_id}",
        headers={"Authorization": f"Bearer {os.environ['BURROW_KEY']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["state"]


def seconds_left(info):
    return round((info.end_at - datetime.now(timezone.utc)).total_seconds())


def main():
    created = []
    run(
        "create",
        lambda: created.append(
            Sandbox.create(template="base", timeout=120, metadata={"suite": "e2e"}, envs={"GREETING": "hi"})
        )
        or created[0].sandbox_id,
    )
    if not created:
        return
    sbx = created[0]

    def run_streaming():
        out, err = [], []
        result = sbx.commands.run(
            "echo $GREETING; echo oops >&2; echo bye",
            on_stdout=out.append,
            on_stderr=err.append,
        )
        return {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
            "streamed_stdout": "".join(out),
            "streamed_stderr": "".join(err),
        }

    run("run", run_streaming)

    def failing_command():
        try:
            sbx.commands.run("exit 3")
        except Exception as e:  # CommandExitException
            return {"type": type(e).__name__, "exit_code": getattr(e, "exit_code", None)}
        return {"type": None}

    run("run_failing", failing_command)

    def background_and_kill():
        handle = sbx.commands.run("sleep 300", background=True)
        listed = [p.pid for p in sbx.commands.list()]
        killed = sbx.commands.kill(handle.pid)
        result = None
        try:
            handle.wait()
        except Exception as e:  # killed: CommandExitException
            result = type(e).__name__
        return {"pid_listed": handle.pid in listed, "killed": killed, "wait": result}

    run("background_kill", background_and_kill)

    def files():
        sbx.files.write("/home/user/e2e/hello.txt", "hello from the SDK")
        text = sbx.files.read("/home/user/e2e/hello.txt")
        names = sorted(e.name for e in sbx.files.list("/home/user/e2e"))
        exists = sbx.files.exists("/home/user/e2e/nope.txt")
        return {"read": text, "names": names, "missing_exists": exists}

    run("files", files)

    def list_by_metadata():
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": "e2e"}, state=[SandboxState.RUNNING]))
        found = paginator.next_items()
        none = Sandbox.list(query=SandboxQuery(metadata={"suite": "other"})).next_items()
        return {"ids": [s.sandbox_id for s in found], "other": len(none)}

    run("list", list_by_metadata)

    def set_timeout():
        before = seconds_left(sbx.get_info())
        sbx.set_timeout(30)
        after = sbx.get_info()
        return {"before": before, "after": seconds_left(after), "state": after.state.value}

    run("set_timeout", set_timeout)

    def info():
        i = sbx.get_info()
        return {
            "sandbox_id": i.sandbox_id,
            "template_id": i.template_id,
            "metadata": i.metadata,
            "state": i.state.value,
            "running": sbx.is_running(),
        }

    run("get_info", info)

    def metrics():
        m = sbx.get_metrics()
        last = m[-1]
        return {"count": len(m), "mem_total": last.mem_total, "cpu_count": last.cpu_count}

    run("metrics", metrics)

    def pause_connect():
        sbx.files.write("/tmp/state.txt", "kept")
        bg = sbx.commands.run("sleep 600", background=True)
        paused = sbx.pause()
        state_paused = Sandbox.get_info(sbx.sandbox_id).state.value
        native_paused = native_state(sbx.sandbox_id)
        again = sbx.pause()
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=60)
        state_after = resumed.get_info().state.value
        native_after = native_state(sbx.sandbox_id)
        text = resumed.files.read("/tmp/state.txt")
        pids = [p.pid for p in resumed.commands.list()]
        echo = resumed.commands.run("echo awake").stdout
        return {
            "paused": paused,
            "state_paused": state_paused,
            "native_paused": native_paused,
            "native_after": native_after,
            "pause_again": again,
            "same_id": resumed.sandbox_id == sbx.sandbox_id,
            "state_after": state_after,
            "file": text,
            "process_kept": bg.pid in pids,
            "echo": echo,
        }

    run("pause_connect", pause_connect)

    run("kill", lambda: sbx.kill())
    run("kill_again", lambda: Sandbox.kill(sbx.sandbox_id))
    run("unknown_template", lambda: Sandbox.create(template="no-such-template").sandbox_id)

    # E2B timeouts are enforced by the server: a 3 s sandbox is gone shortly after.
    def timeout_kills():
        short = Sandbox.create(template="base", timeout=3)
        sid = short.sandbox_id
        deadline = time.time() + 20
        while time.time() < deadline:
            ids = [s.sandbox_id for s in Sandbox.list().next_items()]
            if sid not in ids:
                return {"gone_after_s": round(time.time() - (deadline - 20), 1)}
            time.sleep(0.5)
        return {"gone_after_s": None}

    run("timeout_kills", timeout_kills)

    # on_timeout=pause: the server pauses instead, and connect brings the sandbox back.
    def timeout_pauses():
        sbx = Sandbox.create(template="base", timeout=3, lifecycle={"on_timeout": "pause"})
        sbx.commands.run("echo before > /tmp/mark")
        started = time.time()
        state = None
        while time.time() - started < 20:
            state = Sandbox.get_info(sbx.sandbox_id).state.value
            if state == "paused":
                break
            time.sleep(0.5)
        paused_after = round(time.time() - started, 1)
        back = Sandbox.connect(sbx.sandbox_id, timeout=60)
        mark = back.commands.run("cat /tmp/mark").stdout
        info = back.get_info()
        back.kill()
        return {
            "state": state,
            "paused_after_s": paused_after,
            "mark": mark,
            "state_after": info.state.value,
            "seconds_left": seconds_left(info),
        }

    run("timeout_pauses", timeout_pauses)


if __name__ == "__main__":
    main()
