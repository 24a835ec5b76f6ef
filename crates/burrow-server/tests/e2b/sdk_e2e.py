"""Drives the official `e2b` Python SDK end to end against a real burrow server.

One scenario for every pinned SDK version (2.5, 2.31, 2.50, 2.63, 2.64; the version is read from the
installed package and the few API differences are handled here). Run by tests/e2b_sdk.rs with
E2B_DOMAIN, E2B_API_KEY and SSL_CERT_FILE set: the SDK talks to https://api.{domain} and
https://{port}-{id}.{domain} on port 443. Prints one JSON object per line:
{"step": name, "ok": bool, "value"|"error": ...}; it never stops early, so the Rust side sees
every step's outcome.
"""

import importlib.metadata
import json
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from e2b import Sandbox, SandboxQuery, SandboxState

SDK = importlib.metadata.version("e2b")
SDK_TUPLE = tuple(int(p) for p in SDK.split(".")[:2])
# Metadata unique to this run, so concurrent drivers on one server only list their own sandboxes.
SUITE = f"e2e-{SDK}"

# Test-harness DNS: `*.localhost` is loopback (RFC 6761). SDKs on pyqwest (2.50, 2.63) resolve it
# themselves; httpx (2.5) and urllib go through getaddrinfo, which on Debian's default
# nsswitch does not. On a real deployment this is wildcard DNS or libnss-myhostname.
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


def http(url, data=None, headers=None):
    """(status, body) of a plain HTTPS request (urllib; trusts SSL_CERT_FILE)."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def seconds_left(info):
    return round((info.end_at - datetime.now(timezone.utc)).total_seconds())


def pause(sbx):
    return sbx.pause() if hasattr(sbx, "pause") else sbx.beta_pause()


def wait_for_state(sandbox_id, wanted, limit=20):
    started = time.time()
    state = None
    while time.time() - started < limit:
        state = Sandbox.get_info(sandbox_id).state.value
        if state == wanted:
            break
        time.sleep(0.5)
    return state, round(time.time() - started, 1)


def main():
    emit("sdk", True, value=SDK)
    created = []
    run(
        "create",
        lambda: created.append(
            Sandbox.create(template="base", timeout=120, metadata={"suite": SUITE}, envs={"GREETING": "hi"})
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

    def stdin():
        handle = sbx.commands.run("head -n1", background=True, stdin=True)
        sbx.commands.send_stdin(handle.pid, "from stdin\n")
        return handle.wait().stdout

    run("stdin", stdin)

    def command_timeout():
        started = time.time()
        try:
            sbx.commands.run("sleep 30", timeout=2)
        except Exception as e:  # TimeoutException
            return {"type": type(e).__name__, "after_s": round(time.time() - started, 1)}
        return {"type": None}

    run("command_timeout", command_timeout)

    def files():
        sbx.files.write("/home/user/e2e/hello.txt", "hello from the SDK")
        text = sbx.files.read("/home/user/e2e/hello.txt")
        names = sorted(e.name for e in sbx.files.list("/home/user/e2e"))
        exists = sbx.files.exists("/home/user/e2e/nope.txt")
        return {"read": text, "names": names, "missing_exists": exists}

    run("files", files)

    def watch():
        sbx.files.make_dir("/home/user/watched")
        watcher = sbx.files.watch_dir("/home/user/watched")
        sbx.files.write("/home/user/watched/new.txt", "x")
        names = set()
        deadline = time.time() + 10
        while time.time() < deadline and "new.txt" not in names:
            names |= {event.name for event in watcher.get_new_events()}
            time.sleep(0.2)
        watcher.stop()
        return sorted(names)

    run("watch", watch)

    def signed_urls():
        path = "/home/user/signed.txt"
        upload = sbx.upload_url(path, use_signature_expiration=120)
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"signed.txt\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\nuploaded by URL\r\n--{boundary}--\r\n"
        ).encode()
        up_status, up_body = http(upload, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        download = sbx.download_url(path, use_signature_expiration=120)
        down_status, text = http(download)
        tampered_status, _ = http(download.replace("signature=v1_", "signature=v1_x"))
        unsigned_status, _ = http(download.split("?")[0] + f"?path={path}")
        return {
            "signed": "signature=v1_" in download and "signature_expiration=" in download,
            "host": download.split("/")[2],
            "upload": up_status,
            "upload_body": up_body,
            "download": down_status,
            "text": text,
            "read_back": sbx.files.read(path),
            "tampered": tampered_status,
            "unsigned": unsigned_status,
        }

    run("signed_urls", signed_urls)

    def get_host():
        server = sbx.commands.run(
            "python3 -m http.server 8001 --bind 0.0.0.0", background=True, cwd="/home/user/e2e"
        )
        host = sbx.get_host(8001)
        status, text = None, None
        deadline = time.time() + 15
        while time.time() < deadline:
            status, text = http(f"https://{host}/hello.txt")
            if status == 200:
                break
            time.sleep(0.3)
        closed_status, closed = http(f"https://{sbx.get_host(8002)}/")
        sbx.commands.kill(server.pid)
        return {"host": host, "status": status, "text": text, "closed": closed_status, "closed_body": closed}

    run("get_host", get_host)

    def list_by_metadata():
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": SUITE}, state=[SandboxState.RUNNING]))
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
        paused = pause(sbx)
        state_paused = Sandbox.get_info(sbx.sandbox_id).state.value
        native_paused = native_state(sbx.sandbox_id)
        # No autoResume: traffic gets E2B's 502 "was not found" and does not wake it.
        running_while_paused = sbx.is_running()
        native_after_traffic = native_state(sbx.sandbox_id)
        again = pause(sbx)
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
            "running_while_paused": running_while_paused,
            "native_after_traffic": native_after_traffic,
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
    # e2b-code-interpreter's default template name maps to burrow's `code-interpreter`.
    run("code_interpreter_alias", lambda: Sandbox.create(template="code-interpreter-v1").kill())

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

    # on_timeout=pause (2.5: beta_create(auto_pause=True)): the server pauses instead, and
    # connect brings the sandbox back.
    def timeout_pauses():
        if SDK_TUPLE < (2, 6):
            sbx = Sandbox.beta_create(template="base", timeout=3, auto_pause=True)
        else:
            sbx = Sandbox.create(template="base", timeout=3, lifecycle={"on_timeout": "pause"})
        sbx.commands.run("echo before > /tmp/mark")
        state, paused_after = wait_for_state(sbx.sandbox_id, "paused")
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

    # auto_resume (SDK >= 2.6 has `lifecycle`): SDK traffic itself wakes the paused sandbox.
    def auto_resume():
        sbx = Sandbox.create(
            template="base", timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True}
        )
        sbx.commands.run("echo before > /tmp/mark")
        state, _ = wait_for_state(sbx.sandbox_id, "paused")
        native_paused = native_state(sbx.sandbox_id)
        mark = sbx.commands.run("cat /tmp/mark").stdout
        info = sbx.get_info()
        sbx.kill()
        return {
            "state": state,
            "native_paused": native_paused,
            "mark": mark,
            "state_after": info.state.value,
            "seconds_left": seconds_left(info),
        }

    if SDK_TUPLE >= (2, 6):
        run("auto_resume", auto_resume)


if __name__ == "__main__":
    main()
