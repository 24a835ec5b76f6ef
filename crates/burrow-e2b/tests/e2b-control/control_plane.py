"""Drives the official `e2b` Python SDK's control-plane calls against a burrow E2B API.

Run by tests/python_sdk.rs with E2B_API_URL, E2B_DOMAIN and E2B_API_KEY set. Works with the
pinned SDK versions (2.5.0, 2.50.0, 2.63.0): features are chosen by what the installed SDK has.
Prints one JSON object per line: {"step": name, "ok": bool, "value"|"error": ...}. It never
stops early, so the Rust side sees every step's outcome.
"""

import importlib.metadata
import json
import os
import sys
from datetime import datetime, timezone

from e2b import Sandbox

try:
    from e2b import SandboxQuery, SandboxState
except ImportError:  # very old SDKs
    from e2b.sandbox.sandbox_api import SandboxQuery, SandboxState


def emit(step, ok, **fields):
    print(json.dumps({"step": step, "ok": ok, **fields}, default=str), flush=True)


def run(step, fn):
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - every outcome is reported, not raised
        emit(step, False, error=type(e).__name__, message=str(e)[:300])
        return None
    emit(step, True, value=value)
    return value


def info_summary(info):
    return {
        "sandbox_id": info.sandbox_id,
        "template_id": info.template_id,
        "state": getattr(info.state, "value", info.state),
        "metadata": info.metadata,
        "seconds_left": round((info.end_at - datetime.now(timezone.utc)).total_seconds()),
    }


def main():
    emit("sdk", True, value=importlib.metadata.version("e2b"))
    has_lifecycle = "lifecycle" in Sandbox.create.__code__.co_varnames

    def create():
        kwargs = dict(template="base", timeout=120, metadata={"a": "b"}, envs={"X": "1"})
        if has_lifecycle:
            return Sandbox.create(lifecycle={"on_timeout": "pause", "auto_resume": True}, **kwargs)
        return Sandbox.beta_create(auto_pause=True, **kwargs)

    created = []
    run("create", lambda: created.append(create()) or created[0].sandbox_id)
    if not created:
        return
    sbx = created[0]
    sid = sbx.sandbox_id
    emit("ids", True, value={"sandbox_id": sid, "domain": sbx.sandbox_domain})

    run("get_info", lambda: info_summary(sbx.get_info()))
    run("set_timeout", lambda: sbx.set_timeout(600))
    run("get_info_after_set_timeout", lambda: info_summary(sbx.get_info()))
    run("get_metrics", lambda: len(sbx.get_metrics()))

    def list_filtered():
        query = SandboxQuery(metadata={"a": "b"}, state=[SandboxState.RUNNING, SandboxState.PAUSED])
        paginator = Sandbox.list(query=query, limit=10)
        return [s.sandbox_id for s in paginator.next_items()]

    run("list", list_filtered)

    if hasattr(sbx, "pause"):
        run("pause", lambda: sbx.pause())
        run("pause_again", lambda: Sandbox.pause(sid))
    else:
        run("pause", lambda: sbx.beta_pause())
        run("pause_again", lambda: Sandbox.beta_pause(sid))
    run("get_info_paused", lambda: Sandbox.get_info(sid).state.value)

    def connect():
        connected = Sandbox.connect(sid, timeout=300)
        return {"sandbox_id": connected.sandbox_id, "state": Sandbox.get_info(sid).state.value}

    run("connect_resumes", connect)
    run("connect_running", connect)

    # Calls that go to envd inside the sandbox (https://49983-{id}.{domain}); there is no envd
    # behind this test server, so these are expected to fail and tell which calls need one.
    run("needs_envd_is_running", lambda: sbx.is_running(request_timeout=3))
    run("needs_envd_commands_run", lambda: sbx.commands.run("true", request_timeout=3).exit_code)
    run("needs_envd_files_read", lambda: sbx.files.read("/etc/hostname", request_timeout=3))

    run("kill", lambda: sbx.kill())
    run("kill_again", lambda: Sandbox.kill(sid))
    run("get_info_killed", lambda: Sandbox.get_info(sid).state.value)
    run("create_unknown_template", lambda: Sandbox.create(template="nope").sandbox_id)

    if "network" in Sandbox.create.__code__.co_varnames:
        # What the OpenAI Agents SDK's E2B provider sends; burrow's sandboxes are like that.
        def create_public():
            public = Sandbox.create(template="base", network={"allow_public_traffic": True})
            public.kill()
            return public.sandbox_id is not None

        run("create_public_network", create_public)
        run(
            "create_deny_out",
            lambda: Sandbox.create(template="base", network={"deny_out": ["0.0.0.0/0"]}).sandbox_id,
        )
    if hasattr(Sandbox, "create_snapshot"):
        run("create_snapshot", lambda: Sandbox.create_snapshot(sid).snapshot_id)
    try:
        from e2b import Template
    except ImportError:
        Template = None
    if Template is not None and hasattr(Template, "exists"):
        run("template_exists_base", lambda: Template.exists("base"))
        run("template_exists_nope", lambda: Template.exists("nope"))

    os.environ["E2B_API_KEY"] = "e2b_" + "0" * 40
    run("list_bad_key", lambda: Sandbox.list().next_items())


if __name__ == "__main__":
    main()
    sys.exit(0)
