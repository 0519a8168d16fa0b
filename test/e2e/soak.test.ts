import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../../scripts/harness/server.ts';
import type { SoakReport } from '../../scripts/soak/report.ts';
import { percentile, Spans } from '../../scripts/soak/stats.ts';
import { planSwaps } from '../../scripts/soak/swapper.ts';
import { swapModelsRoot } from '../engine/served-model.ts';
import { tempDir } from '../helpers.ts';

/**
 * The soak script, short: 20 SSE and WebSocket clients (some cancelling, some churning sockets)
 * against the real server on two small swappable models, six swaps under both policies, one to a
 * corrupt copy, then the leak check. Figures are the script's; no timing is asserted.
 */
test('soak: streams survive swaps both ways under both policies; nothing dropped or leaked', async (t) => {
  const dir = tempDir(t);
  const root = await swapModelsRoot(dir);
  const json = join(dir, 'soak.json');
  const args = [
    ...['--import', 'tsx', join(ROOT, 'scripts/soak.ts'), '--models-dir', root],
    ...['--from', 'a', '--to', 'b', '--corrupt-from', 'a', '--server-cwd', dir],
    ...['--clients', '20', '--duration-s', '24', '--warmup-s', '3', '--swap-every-s', '3', '--tail-s', '3'],
    ...['--max-tokens', '8-48', '--max-sequences', '8', '--threads', '1', '--json', json],
    ...['--served-model-name', 'tf-soak'],
  ];
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  for (const s of [proc.stdout, proc.stderr]) s.setEncoding('utf8').on('data', (d: string) => (output += d));
  const code = await new Promise<number | null>((r) => proc.once('exit', r));
  t.diagnostic(output.slice(output.indexOf('soak: ')));
  const r = JSON.parse(readFileSync(json, 'utf8')) as SoakReport;

  assert.ok(r.streams.started >= 20, `${r.streams.started} streams started`);
  assert.equal(r.streams.dropped, 0, r.streams.problems.join('\n'));
  assert.equal(r.streams.errors, 0, r.streams.problems.join('\n'));
  assert.equal(r.streams.hung, 0, r.streams.problems.join('\n'));
  assert.equal(r.streams.completed + r.streams.refused, r.streams.started);
  // Every client sent the served name; every chunk named it, from both models' versions.
  assert.ok(
    r.versions.seen.every((v) => v.startsWith('tf-soak@')),
    r.versions.seen.join(', '),
  );
  assert.ok(new Set(r.versions.seen).size >= 2, r.versions.seen.join(', '));
  assert.ok(r.streams.finish.cancelled > 0, 'some streams were cancelled mid-stream');
  assert.ok(r.streams.by_transport.sse.completed > 0 && r.streams.by_transport.ws.completed > 0);
  assert.equal(r.swaps.planned, 6);
  assert.ok(r.swaps.done >= r.swaps.planned, `${r.swaps.done} of ${r.swaps.planned} swaps done`);
  assert.ok(r.swaps.by_policy.migrate > 0 && r.swaps.by_policy.drain > 0);
  assert.equal(r.swaps.corrupt?.status, 422, JSON.stringify(r.swaps.corrupt));
  assert.ok(r.swaps.corrupt.unchanged, 'the corrupt swap left the serving model as it was');
  // Of one drain swap sent twice at once, the request that arrives second is refused.
  assert.deepEqual(
    { status: r.swaps.concurrent?.status, code: r.swaps.concurrent?.code },
    { status: 409, code: 'TF_ERR_SWAP_IN_PROGRESS' },
  );
  assert.equal(r.leaks.requests_running, 0);
  assert.equal(r.leaks.requests_waiting, 0);
  assert.equal(r.leaks.kv_cache_usage_ratio, 0);
  assert.equal(r.leaks.leaked, 0, JSON.stringify(r.leaks));
  assert.ok(r.rss_mib.peak !== null && r.rss_mib.series.length > 0);
  assert.equal(r.server.exit_code, 0);
  assert.equal(code, 0, `the soak failed: ${r.failures.join('; ')}`);
});

test('soak plan: both directions under both policies, the corrupt swap third, too few slots refused', () => {
  const names = { from: 'a', to: 'b', corrupt: 'corrupt' };
  const plan = planSwaps(names, { durationS: 60, warmupS: 5, tailS: 5, everyS: 10 });
  assert.deepEqual(
    plan.map((p) => [p.atS, p.swap.target, p.swap.policy]),
    [
      [5, 'b', 'migrate'],
      [15, 'a', 'migrate'],
      [25, 'corrupt', 'migrate'],
      [35, 'b', 'drain'],
      [45, 'a', 'drain'],
      [55, 'b', 'migrate'],
    ],
  );
  assert.throws(() => planSwaps(names, { durationS: 20, warmupS: 5, tailS: 5, everyS: 10 }), /at least 3/);
});

test('soak latency: a sample overlapping a swap window counts as during swaps; nearest-rank percentiles', () => {
  const spans = new Spans();
  spans.add(0, 10); // before the window
  spans.add(95, 105); // began before, ended inside
  spans.add(150, 170); // inside
  spans.add(300, 301); // after
  const { steady, swap } = spans.split([{ start: 100, end: 200 }]);
  assert.deepEqual(steady, [10, 1]);
  assert.deepEqual(swap, [10, 20]);
  const values = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(values, 50), 50);
  assert.equal(percentile(values, 99), 99);
  assert.equal(percentile([7], 99), 7);
});
