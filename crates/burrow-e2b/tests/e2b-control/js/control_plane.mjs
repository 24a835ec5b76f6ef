// Drives the official `e2b` JS SDK's control-plane calls against a burrow E2B API.
// Run by tests/js_sdk.rs with E2B_API_URL, E2B_DOMAIN, E2B_API_KEY and E2B_JS_MODULE (file URL of
// the installed SDK) set. Prints one JSON object per line, like ../control_plane.py.

const { Sandbox } = await import(process.env.E2B_JS_MODULE);
const { createRequire } = await import('node:module');

function emit(step, ok, fields) {
  console.log(JSON.stringify({ step, ok, ...fields }));
}

async function run(step, fn) {
  try {
    const value = await fn();
    emit(step, true, { value: value === undefined ? null : value });
    return value;
  } catch (e) {
    emit(step, false, { error: e?.constructor?.name ?? 'Error', message: String(e?.message ?? e).slice(0, 300) });
    return null;
  }
}

const summary = (info) => ({
  sandbox_id: info.sandboxId,
  template_id: info.templateId,
  state: info.state,
  metadata: info.metadata,
  seconds_left: Math.round((info.endAt.getTime() - Date.now()) / 1000),
});

const pkg = createRequire(new URL(process.env.E2B_JS_MODULE))('e2b/package.json');
emit('sdk', true, { value: pkg.version });

let sbx = null;
await run('create', async () => {
  sbx = await Sandbox.create('base', {
    timeoutMs: 120_000,
    metadata: { a: 'b' },
    envs: { X: '1' },
    lifecycle: { onTimeout: 'pause', autoResume: true },
  });
  return sbx.sandboxId;
});
if (sbx) {
  const id = sbx.sandboxId;
  emit('ids', true, { value: { sandbox_id: id, domain: sbx.sandboxDomain ?? null } });
  await run('get_info', async () => summary(await sbx.getInfo()));
  await run('set_timeout', () => sbx.setTimeout(600_000));
  await run('get_info_after_set_timeout', async () => summary(await sbx.getInfo()));
  await run('get_metrics', async () => (await sbx.getMetrics()).length);
  await run('list', async () => {
    const paginator = Sandbox.list({ query: { metadata: { a: 'b' }, state: ['running', 'paused'] }, limit: 10 });
    return (await paginator.nextItems()).map((s) => s.sandboxId);
  });
  await run('pause', () => sbx.pause());
  await run('pause_again', () => Sandbox.pause(id));
  await run('get_info_paused', async () => (await Sandbox.getInfo(id)).state);
  const connect = async () => {
    const c = await Sandbox.connect(id, { timeoutMs: 300_000 });
    return { sandbox_id: c.sandboxId, state: (await Sandbox.getInfo(id)).state };
  };
  await run('connect_resumes', connect);
  await run('connect_running', connect);
  await run('needs_envd_is_running', () => sbx.isRunning({ requestTimeoutMs: 3000 }));
  await run('needs_envd_commands_run', async () => (await sbx.commands.run('true', { requestTimeoutMs: 3000 })).exitCode);
  await run('needs_envd_files_read', () => sbx.files.read('/etc/hostname', { requestTimeoutMs: 3000 }));
  await run('kill', () => sbx.kill());
  await run('kill_again', () => Sandbox.kill(id));
  await run('get_info_killed', async () => (await Sandbox.getInfo(id)).state);
  await run('create_unknown_template', async () => (await Sandbox.create('nope')).sandboxId);
  await run('list_bad_key', () => Sandbox.list({ apiKey: 'e2b_' + '0'.repeat(40) }).nextItems());
}
