"""burrow's code-interpreter server: the HTTP API `e2b-code-interpreter` speaks on port 49999.

Each context is one Jupyter kernel (ipykernel, through jupyter_client) owned by this process.
Endpoints:
  GET  /health                   -> 200 "OK"
  POST /execute                  {code, context_id?, language?, env_vars?} -> NDJSON stream
  POST /contexts                 {language?, cwd?} -> {id, language, cwd}
  GET  /contexts                 -> [{id, language, cwd}]
  DELETE /contexts/{id}          -> 204
  POST /contexts/{id}/restart    -> 204

The default Python context's kernel is started (and ready) before the port is bound, so a
sandbox whose readiness check is "port 49999 accepts" has a warm kernel.
"""

import argparse
import asyncio
import getpass
import json
import logging
import os
import queue
import time
import uuid

from aiohttp import web
from jupyter_client.manager import AsyncKernelManager

log = logging.getLogger("burrow-code-interpreter")

SUPPORTED_LANGUAGES = ("python",)
DEFAULT_LANGUAGE = "python"
KERNEL_READY_TIMEOUT = 60
# How often a waiting execution checks that its kernel is still alive.
KERNEL_POLL_SECONDS = 1
# How often a running execution checks that its client is still connected.
DISCONNECT_POLL_SECONDS = 0.2

# Jupyter MIME types -> the field names of the SDK's `Result`.
MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}


# As E2B's interpreter: a string result is shown as its text, not its repr
# (`run_code("'abc'").text == "abc"`). Installed in every kernel, after each (re)start.
STR_RESULTS_AS_TEXT = (
    "get_ipython().display_formatter.formatters['text/plain']"
    ".for_type(str, lambda s, p, cycle: p.text(s))\n"
)


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def now():
    """Timestamps are Unix epoch nanoseconds, as the SDK's `OutputMessage` documents."""
    return time.time_ns()


def result_event(data, is_main_result):
    event = {"type": "result", "is_main_result": is_main_result}
    extra = {}
    for mime, value in data.items():
        field = MIME_FIELDS.get(mime)
        if field:
            event[field] = value
        else:
            extra[mime] = value
    if extra:
        event["extra"] = extra
    return event


def env_snippet(env_vars):
    """Python code that sets `env_vars` in the kernel and returns the code restoring them."""
    assignments = json.dumps(env_vars)
    set_code = (
        "import os as __burrow_os, json as __burrow_json\n"
        f"__burrow_saved_env = {{k: __burrow_os.environ.get(k) for k in __burrow_json.loads({assignments!r})}}\n"
        f"__burrow_os.environ.update(__burrow_json.loads({assignments!r}))\n"
    )
    restore_code = (
        "for __k, __v in __burrow_saved_env.items():\n"
        "    if __v is None:\n"
        "        __burrow_os.environ.pop(__k, None)\n"
        "    else:\n"
        "        __burrow_os.environ[__k] = __v\n"
        "del __burrow_saved_env\n"
    )
    return set_code, restore_code


class Context:
    """One kernel plus the lock that runs its executions one at a time."""

    def __init__(self, context_id, language, cwd):
        self.id = context_id
        self.language = language
        self.cwd = cwd
        self.manager = AsyncKernelManager(kernel_name="python3")
        self.client = None
        self.lock = asyncio.Lock()

    def describe(self):
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def start(self):
        await self.manager.start_kernel(cwd=self.cwd, env=dict(os.environ))
        await self._connect()

    async def _connect(self):
        self.client = self.manager.client()
        # No heartbeat channel: after a standby (frozen cgroup) it would declare the kernel dead.
        self.client.start_channels(hb=False)
        await self.client.wait_for_ready(timeout=KERNEL_READY_TIMEOUT)
        await self.run_silently(STR_RESULTS_AS_TEXT, "setting up the kernel")

    async def restart(self):
        async with self.lock:
            self.client.stop_channels()
            await self.manager.restart_kernel(now=True)
            await self._connect()

    async def shutdown(self):
        if self.client is not None:
            self.client.stop_channels()
        await self.manager.shutdown_kernel(now=True)

    async def run_silently(self, code, what="setting env_vars"):
        """Runs bookkeeping code (env vars, formatters) without a trace in history or execution
        count."""
        msg_id = self.client.execute(code, silent=True, store_history=False)
        while True:
            reply = await self.client.get_shell_msg()
            if reply["parent_header"].get("msg_id") == msg_id:
                if reply["content"].get("status") != "ok":
                    content = reply["content"]
                    raise RequestError(
                        400, f"{what} failed: {content.get('ename')}: {content.get('evalue')}"
                    )
                return

    async def execute(self, code, emit):
        """Runs `code`, calling `emit(event)` for every event of the execution, in order."""
        msg_id = self.client.execute(code, store_history=True, allow_stdin=False)
        while True:
            try:
                msg = await self.client.get_iopub_msg(timeout=KERNEL_POLL_SECONDS)
            except queue.Empty:
                if not await self.manager.is_alive():
                    await self._recover_from_death(emit)
                    return
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                name = "stderr" if content.get("name") == "stderr" else "stdout"
                await emit({"type": name, "text": content.get("text", ""), "timestamp": now()})
            elif kind == "execute_input":
                count = content.get("execution_count")
                if count is not None:
                    await emit({"type": "number_of_executions", "execution_count": count})
            elif kind == "execute_result":
                await emit(result_event(content.get("data", {}), True))
            elif kind == "display_data":
                await emit(result_event(content.get("data", {}), False))
            elif kind == "error":
                await emit(
                    {
                        "type": "error",
                        "name": content.get("ename", ""),
                        "value": content.get("evalue", ""),
                        "traceback": "\n".join(content.get("traceback", [])),
                    }
                )
            elif kind == "status" and content.get("execution_state") == "idle":
                await self._take_reply(msg_id)
                return

    async def _take_reply(self, msg_id):
        """Consumes the shell reply of `msg_id` (and older ones), so replies do not pile up."""
        try:
            while True:
                reply = await self.client.get_shell_msg(timeout=KERNEL_POLL_SECONDS)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return
        except queue.Empty:
            return

    async def _recover_from_death(self, emit):
        """The kernel process died mid-execution (os._exit, out of memory): report it, start a
        fresh kernel for this context."""
        log.warning("kernel of context %s died; restarting it", self.id)
        await emit(
            {
                "type": "error",
                "name": "KernelDied",
                "value": "the kernel died while running this code; it was restarted and its state is lost",
                "traceback": "",
            }
        )
        self.client.stop_channels()
        await self.manager.restart_kernel(now=True)
        await self._connect()


class Contexts:
    def __init__(self, default_cwd):
        self.default_cwd = default_cwd
        self.by_id = {}
        self.default_by_language = {}

    async def create(self, language, cwd):
        language = (language or DEFAULT_LANGUAGE).lower()
        if language not in SUPPORTED_LANGUAGES:
            raise RequestError(
                400,
                f"language '{language}' is not supported (supported: {', '.join(SUPPORTED_LANGUAGES)})",
            )
        cwd = cwd or self.default_cwd
        if not os.path.isdir(cwd):
            raise RequestError(400, f"cwd '{cwd}' is not a directory")
        # A directory the kernel's user cannot enter (e.g. /root) would fail the kernel's start
        # (a 500): say so instead.
        if not os.access(cwd, os.X_OK):
            raise RequestError(
                400, f"cwd '{cwd}' is not accessible to the kernel's user ({getpass.getuser()})"
            )
        context = Context(str(uuid.uuid4()), language, cwd)
        await context.start()
        self.by_id[context.id] = context
        return context

    async def default_for(self, language):
        language = (language or DEFAULT_LANGUAGE).lower()
        context = self.default_by_language.get(language)
        if context is None or context.id not in self.by_id:
            context = await self.create(language, None)
            self.default_by_language[language] = context
        return context

    def get(self, context_id):
        context = self.by_id.get(context_id)
        if context is None:
            raise RequestError(404, f"context '{context_id}' not found")
        return context

    async def remove(self, context_id):
        context = self.get(context_id)
        del self.by_id[context_id]
        await context.shutdown()

    async def shutdown_all(self):
        for context in list(self.by_id.values()):
            await context.shutdown()
        self.by_id.clear()


def error_response(status, message):
    return web.json_response({"message": message, "code": status}, status=status)


async def read_json(request):
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON: {e}")
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


def optional_string(body, key):
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(400, f"'{key}' must be a string")
    return value


@web.middleware
async def errors(request, handler):
    try:
        return await handler(request)
    except RequestError as e:
        return error_response(e.status, e.message)


async def health(request):
    return web.Response(text="OK")


async def create_context(request):
    body = await read_json(request)
    contexts = request.app["contexts"]
    context = await contexts.create(optional_string(body, "language"), optional_string(body, "cwd"))
    return web.json_response(context.describe())


async def list_contexts(request):
    return web.json_response([c.describe() for c in request.app["contexts"].by_id.values()])


async def remove_context(request):
    await request.app["contexts"].remove(request.match_info["id"])
    return web.Response(status=204)


async def restart_context(request):
    await request.app["contexts"].get(request.match_info["id"]).restart()
    return web.Response(status=204)


async def execute(request):
    body = await read_json(request)
    code = body.get("code")
    if not isinstance(code, str):
        raise RequestError(400, "'code' (a string) is required")
    context_id = optional_string(body, "context_id")
    language = optional_string(body, "language")
    env_vars = body.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise RequestError(400, "'env_vars' must be an object of strings")
    if context_id and language:
        raise RequestError(400, "give context_id or language, not both")
    contexts = request.app["contexts"]
    context = contexts.get(context_id) if context_id else await contexts.default_for(language)

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    async def emit(event):
        await response.write(json.dumps(event).encode() + b"\n")

    async with context.lock:
        if env_vars:
            set_code, restore_code = env_snippet(env_vars)
            await context.run_silently(set_code)
        try:
            await run_until_disconnect(request, context, context.execute(code, emit))
            await emit({"type": "end_of_execution"})
        finally:
            if env_vars:
                await context.run_silently(restore_code)
    await response.write_eof()
    return response


async def run_until_disconnect(request, context, execution):
    """Runs the execution; if the client goes away first, interrupts the kernel (so a timed-out or
    cancelled `run_code` does not keep computing) and stops."""
    task = asyncio.ensure_future(execution)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            transport = request.transport
            if not task.done() and (transport is None or transport.is_closing()):
                log.info("client disconnected: interrupting context %s", context.id)
                task.cancel()
                await context.manager.interrupt_kernel()
                await drain_until_idle(context)
                raise asyncio.CancelledError()
        task.result()
    except (ConnectionResetError, asyncio.CancelledError):
        if not task.done():
            task.cancel()
        raise


async def drain_until_idle(context):
    """Discards the interrupted execution's remaining output so the next one starts clean."""
    try:
        while True:
            msg = await asyncio.wait_for(context.client.get_iopub_msg(), timeout=10)
            if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                return
    except asyncio.TimeoutError:
        log.warning("context %s did not go idle after an interrupt", context.id)


async def on_startup(app):
    await app["contexts"].default_for(DEFAULT_LANGUAGE)
    log.info("default python context ready")


async def on_cleanup(app):
    await app["contexts"].shutdown_all()


def make_app(default_cwd):
    app = web.Application(middlewares=[errors], client_max_size=64 * 1024 * 1024)
    app["contexts"] = Contexts(default_cwd)
    app.router.add_get("/health", health)
    app.router.add_post("/execute", execute)
    app.router.add_post("/contexts", create_context)
    app.router.add_get("/contexts", list_contexts)
    app.router.add_delete("/contexts/{id}", remove_context)
    app.router.add_post("/contexts/{id}/restart", restart_context)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=49999)
    parser.add_argument("--cwd", default=os.path.expanduser("~"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # on_startup (the warm default kernel) runs before the socket is bound.
    web.run_app(make_app(args.cwd), host=args.host, port=args.port, keepalive_timeout=640)


if __name__ == "__main__":
    main()
