// Drives the official `e2b` JS SDK end to end against a real burrow server: the same scenario as
// sdk_e2e.py. Run by tests/e2b_sdk.rs with E2B_DOMAIN, E2B_API_KEY, NODE_EXTRA_CA_CERTS (burrow's
// CA) and E2B_JS_MODULE (file URL of the installed SDK). Prints one JSON object per line.

import dns from 'node:dns';
import { createRequire } from 'node:module';

// Test-harness DNS: `*.localhost` is loopback (RFC 6761), but Node resolves through getaddrinfo,
// which on Debian's default nsswitch does not know it. A deployment uses wildcard DNS instead.
const systemLookup = dns.lookup;
dns.lookup = (host, options, callback) => {
  if (typeof host === 'string' && host.endsWith('.localhost')) {
    host = '127.0.0.1';
  }
  return systemLookup(host, options, callback);
};

const { Sandbox } = await import(process.env.E2B_JS_MODULE);
const pkg = createRequire(new URL(process.env.E2B_JS_MODULE))('e2b/package.json');
const SUITE = `e2e-js-${pkg.version}`;

function emit(step, ok, fields) {
  console.log(JSON.stringify({ step, ok, ...fields }));
}

async function run(step, fn) {
  try {
    const value = await fn();
    emit(step, true, { value: value === undefined ? null : value });
    return value;
  } catch (e) {
    emit(step, false, { error: e?.constructor?.name ?? 'Error', message: String(e?.message ?? e).slice(0, 500) });
    return null;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const secondsLeft = (info) => Math.round((info.endAt.getTime() - Date.now()) / 1000);

async function nativeState(id) {
  const res = await fetch(`${process.env.BURROW_URL}/v1/sandboxes/${id}`, {
    headers: { authorization: `Bearer ${process.env.BURROW_KEY}` },
  });
  return (await res.json()).state;
}

async function httpGet(url, init) {
  const res = await fetch(url, init);
  return { status: res.status, text: await res.text() };
}

async function waitForState(id, wanted, limitMs = 20_000) {
  const started = Date.now();
  let state = null;
  while (Date.now() - started < limitMs) {
    state = (await Sandbox.getInfo(id)).state;
    if (state === wanted) break;
    await sleep(500);
  }
  return { state, after_s: Math.round((Date.now() - started) / 100) / 10 };
}

emit('sdk', true, { value: pkg.version });

let sbx = null;
await run('create', async () => {
  sbx = await Sandbox.create('base', { timeoutMs: 120_000, metadata: { suite: SUITE }, envs: { GREETING: 'hi' } });
  return sbx.sandboxId;
});

if (sbx) {
  const id = sbx.sandboxId;

  await run('run', async () => {
    const out = [];
    const err = [];
    const r = await sbx.commands.run('echo $GREETING; echo oops >&2; echo bye', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    });
    return {
      stdout: r.stdout,
      stderr: r.stderr,
      exit_code: r.exitCode,
      streamed_stdout: out.join(''),
      streamed_stderr: err.join(''),
    };
  });

  await run('run_failing', async () => {
    try {
      await sbx.commands.run('exit 3');
    } catch (e) {
      return { type: e.constructor.name, exit_code: e.exitCode ?? null };
    }
    return { type: null };
  });

  await run('background_kill', async () => {
    const handle = await sbx.commands.run('sleep 300', { background: true });
    const listed = (await sbx.commands.list()).map((p) => p.pid);
    const killed = await sbx.commands.kill(handle.pid);
    let wait = null;
    try {
      await handle.wait();
    } catch (e) {
      wait = e.constructor.name;
    }
    return { pid_listed: listed.includes(handle.pid), killed, wait };
  });

  await run('stdin', async () => {
    const handle = await sbx.commands.run('head -n1', { background: true, stdin: true });
    await sbx.commands.sendStdin(handle.pid, 'from stdin\n');
    return (await handle.wait()).stdout;
  });

  await run('command_timeout', async () => {
    const started = Date.now();
    try {
      await sbx.commands.run('sleep 30', { timeoutMs: 2_000 });
    } catch (e) {
      return { type: e.constructor.name, after_s: Math.round((Date.now() - started) / 100) / 10 };
    }
    return { type: null };
  });

  await run('files', async () => {
    await sbx.files.write('/home/user/e2e/hello.txt', 'hello from the SDK');
    const read = await sbx.files.read('/home/user/e2e/hello.txt');
    const names = (await sbx.files.list('/home/user/e2e')).map((e) => e.name).sort();
    const missing_exists = await sbx.files.exists('/home/user/e2e/nope.txt');
    return { read, names, missing_exists };
  });

  await run('watch', async () => {
    await sbx.files.makeDir('/home/user/watched');
    const names = new Set();
    const watcher = await sbx.files.watchDir('/home/user/watched', (event) => names.add(event.name));
    await sbx.files.write('/home/user/watched/new.txt', 'x');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !names.has('new.txt')) await sleep(200);
    await watcher.stop();
    return [...names].sort();
  });

  await run('signed_urls', async () => {
    const path = '/home/user/signed.txt';
    const upload = await sbx.uploadUrl(path, { useSignatureExpiration: 120 });
    const form = new FormData();
    form.append('file', new Blob(['uploaded by URL']), 'signed.txt');
    const up = await httpGet(upload, { method: 'POST', body: form });
    const download = await sbx.downloadUrl(path, { useSignatureExpiration: 120 });
    const down = await httpGet(download);
    const tampered = await httpGet(download.replace('signature=v1_', 'signature=v1_x'));
    const unsigned = await httpGet(`${download.split('?')[0]}?path=${path}`);
    return {
      signed: download.includes('signature=v1_') && download.includes('signature_expiration='),
      host: new URL(download).host,
      upload: up.status,
      upload_body: up.text,
      download: down.status,
      text: down.text,
      read_back: await sbx.files.read(path).catch((e) => String(e)),
      tampered: tampered.status,
      unsigned: unsigned.status,
    };
  });

  await run('get_host', async () => {
    const server = await sbx.commands.run('python3 -m http.server 8001 --bind 0.0.0.0', {
      background: true,
      cwd: '/home/user/e2e',
    });
    const host = sbx.getHost(8001);
    let res = { status: null, text: null };
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      try {
        res = await httpGet(`https://${host}/hello.txt`);
        if (res.status === 200) break;
      } catch (e) {
        res = { status: null, text: String(e) };
      }
      await sleep(300);
    }
    const closed = await httpGet(`https://${sbx.getHost(8002)}/`);
    await sbx.commands.kill(server.pid);
    return { host, status: res.status, text: res.text, closed: closed.status, closed_body: closed.text };
  });

  await run('list', async () => {
    const found = await Sandbox.list({ query: { metadata: { suite: SUITE }, state: ['running'] } }).nextItems();
    const none = await Sandbox.list({ query: { metadata: { suite: 'other' } } }).nextItems();
    return { ids: found.map((s) => s.sandboxId), other: none.length };
  });

  await run('set_timeout', async () => {
    const before = secondsLeft(await sbx.getInfo());
    await sbx.setTimeout(30_000);
    const after = await sbx.getInfo();
    return { before, after: secondsLeft(after), state: after.state };
  });

  await run('get_info', async () => {
    const i = await sbx.getInfo();
    return {
      sandbox_id: i.sandboxId,
      template_id: i.templateId,
      metadata: i.metadata,
      state: i.state,
      running: await sbx.isRunning(),
    };
  });

  await run('metrics', async () => {
    const m = await sbx.getMetrics();
    const last = m[m.length - 1];
    return { count: m.length, mem_total: last.memTotal, cpu_count: last.cpuCount };
  });

  await run('pause_connect', async () => {
    await sbx.files.write('/tmp/state.txt', 'kept');
    const bg = await sbx.commands.run('sleep 600', { background: true });
    const paused = await sbx.pause();
    const state_paused = (await Sandbox.getInfo(id)).state;
    const native_paused = await nativeState(id);
    const running_while_paused = await sbx.isRunning();
    const native_after_traffic = await nativeState(id);
    const again = await sbx.pause();
    const resumed = await Sandbox.connect(id, { timeoutMs: 60_000 });
    const state_after = (await resumed.getInfo()).state;
    const native_after = await nativeState(id);
    const file = await resumed.files.read('/tmp/state.txt');
    const pids = (await resumed.commands.list()).map((p) => p.pid);
    const echo = (await resumed.commands.run('echo awake')).stdout;
    return {
      paused,
      state_paused,
      native_paused,
      running_while_paused,
      native_after_traffic,
      native_after,
      pause_again: again,
      same_id: resumed.sandboxId === id,
      state_after,
      file,
      process_kept: pids.includes(bg.pid),
      echo,
    };
  });

  await run('kill', () => sbx.kill());
  await run('kill_again', () => Sandbox.kill(id));
  await run('unknown_template', async () => (await Sandbox.create('no-such-template')).sandboxId);
  await run('code_interpreter_alias', async () => (await Sandbox.create('code-interpreter-v1')).kill());

  await run('timeout_kills', async () => {
    const short = await Sandbox.create('base', { timeoutMs: 3_000 });
    const started = Date.now();
    while (Date.now() - started < 20_000) {
      const ids = (await Sandbox.list().nextItems()).map((s) => s.sandboxId);
      if (!ids.includes(short.sandboxId)) return { gone_after_s: Math.round((Date.now() - started) / 100) / 10 };
      await sleep(500);
    }
    return { gone_after_s: null };
  });

  await run('timeout_pauses', async () => {
    const s = await Sandbox.create('base', { timeoutMs: 3_000, lifecycle: { onTimeout: 'pause' } });
    await s.commands.run('echo before > /tmp/mark');
    const { state, after_s } = await waitForState(s.sandboxId, 'paused');
    const back = await Sandbox.connect(s.sandboxId, { timeoutMs: 60_000 });
    const mark = (await back.commands.run('cat /tmp/mark')).stdout;
    const info = await back.getInfo();
    await back.kill();
    return { state, paused_after_s: after_s, mark, state_after: info.state, seconds_left: secondsLeft(info) };
  });

  await run('auto_resume', async () => {
    const s = await Sandbox.create('base', { timeoutMs: 3_000, lifecycle: { onTimeout: 'pause', autoResume: true } });
    await s.commands.run('echo before > /tmp/mark');
    const { state } = await waitForState(s.sandboxId, 'paused');
    const native_paused = await nativeState(s.sandboxId);
    const mark = (await s.commands.run('cat /tmp/mark')).stdout;
    const info = await s.getInfo();
    await s.kill();
    return { state, native_paused, mark, state_after: info.state, seconds_left: secondsLeft(info) };
  });
}
