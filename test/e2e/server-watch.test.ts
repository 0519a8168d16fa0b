import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ServerProcess, until } from '../../scripts/harness/server.ts';
import { growDirectory } from '../../src/model/grow.ts';
import { servedModel } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';

let dir: string;
let root: string;
const servers: ServerProcess[] = [];
const cleanups: (() => void)[] = [];

before(async () => {
  dir = tempDir({ after: (fn) => cleanups.push(fn) });
  root = join(dir, 'models');
  mkdirSync(root);
  const served = await servedModel(join(dir, 'served'));
  await growDirectory(served.checkpoint, join(root, 'a'), { target: { ffn: 100 } });
});
after(async () => {
  for (const s of servers) await s.stop();
  for (const c of cleanups) c();
});

/** Writes a new version of models/a (grown once more) by replacing the directory. */
async function publishNewVersion(ffn: number): Promise<void> {
  await growDirectory(join(root, 'a'), join(dir, `next-${ffn}`), { target: { ffn } });
  renameSync(join(root, 'a'), join(dir, `old-${ffn}`));
  renameSync(join(dir, `next-${ffn}`), join(root, 'a'));
  rmSync(join(dir, `old-${ffn}`), { recursive: true, force: true });
}

async function version(s: ServerProcess): Promise<string> {
  const body = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: { version: string }[] };
  return body.data[0]!.version;
}

test('--watch swaps in a new version written to the serving model directory; SIGHUP does it at once', async () => {
  const watching = await ServerProcess.start(
    ['--models-dir', root, '--model', 'a', '--device', 'cpu', '--threads', '1', '--watch', '200'],
    { cwd: dir },
  );
  servers.push(watching);
  const v1 = await version(watching);
  await publishNewVersion(112);
  const v2 = await until(
    async () => {
      const v = await version(watching);
      return v !== v1 ? v : undefined;
    },
    'the watcher to swap in the new version',
    30_000,
  );
  assert.notEqual(v2, v1);
  assert.equal(await watching.metric('tokenformer_model_swaps_total{result="success"}'), 1);
  await watching.stop();

  const hup = await ServerProcess.start(
    ['--models-dir', root, '--model', 'a', '--device', 'cpu', '--threads', '1'],
    { cwd: dir },
  );
  servers.push(hup);
  const h1 = await version(hup);
  await publishNewVersion(120);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await version(hup), h1, 'without --watch nothing changes until SIGHUP');
  hup.proc.kill('SIGHUP');
  const h2 = await until(
    async () => {
      const v = await version(hup);
      return v !== h1 ? v : undefined;
    },
    'SIGHUP to swap in the new version',
    30_000,
  );
  assert.notEqual(h2, h1);
  // A completion still works on the new version.
  const r = await fetch(`${hup.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'The sea', max_tokens: 3 }),
  });
  assert.equal(r.status, 200);
});
