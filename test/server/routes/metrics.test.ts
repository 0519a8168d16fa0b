import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MODEL, type TestApp, testApp } from '../helpers.ts';
import { promtoolCheck, REQUIRED_METRICS } from '../promtool.ts';

let t: TestApp;
before(async () => {
  t = await testApp();
});
after(() => t.close());

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('/metrics exposes every required metric, counts requests and tokens, and passes promtool', async () => {
  const payload = {
    model: MODEL,
    prompt: 'Call me Ishmael.',
    max_tokens: 4,
    temperature: 0,
    ignore_eos: true,
  };
  assert.equal((await t.app.inject({ method: 'POST', url: '/v1/completions', payload })).statusCode, 200);
  await t.app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 5 } });
  await t.app.inject({ url: '/nowhere' });
  const r = await t.app.inject({ url: '/metrics' });
  assert.equal(r.statusCode, 200);
  assert.match(r.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
  const text = r.body;
  for (const name of REQUIRED_METRICS) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  assert.match(text, /^# TYPE tokenformer_process_cpu_seconds_total counter/m); // default metrics, prefixed
  const name = `model_name="${MODEL}"`;
  const v = `${name},version="${t.version}"`;
  assert.equal(sample(text, `tokenformer_requests_total{route="/v1/completions",status="200",${name}}`), 1);
  assert.equal(sample(text, `tokenformer_requests_total{route="/v1/completions",status="400",${name}}`), 1);
  assert.equal(sample(text, `tokenformer_requests_total{route="unmatched",status="404",${name}}`), 1);
  const prompt = t.engine.tokenizer.encode('Call me Ishmael.').length;
  assert.equal(sample(text, `tokenformer_prompt_tokens_total{${name}}`), prompt);
  assert.equal(sample(text, `tokenformer_generation_tokens_total{${v}}`), 4);
  assert.equal(sample(text, `tokenformer_time_to_first_token_seconds_count{${v}}`), 1);
  assert.equal(sample(text, `tokenformer_inter_token_latency_seconds_count{${v}}`), 3);
  assert.equal(sample(text, `tokenformer_request_duration_seconds_count{${name}}`), 1);
  assert.equal(sample(text, `tokenformer_queue_wait_seconds_count{${v}}`), 1);
  assert.equal(sample(text, `tokenformer_request_prompt_tokens_sum{${name}}`), prompt);
  assert.equal(sample(text, `tokenformer_request_generation_tokens_sum{${name}}`), 4);
  assert.equal(sample(text, `tokenformer_request_success_total{${name},finished_reason="length"}`), 1);
  assert.equal(sample(text, `tokenformer_request_success_total{${name},finished_reason="stop"}`), 0);
  assert.equal(sample(text, `tokenformer_requests_running{${v}}`), 0);
  assert.equal(sample(text, `tokenformer_requests_waiting{${v}}`), 0);
  assert.equal(sample(text, `tokenformer_kv_cache_usage_ratio{${v}}`), 0);
  assert.equal(
    sample(
      text,
      `tokenformer_model_info{model="${MODEL}",version="${t.version}",${name},source="${t.registry.model.name}",state="serving"}`,
    ),
    1,
  );
  assert.equal(sample(text, 'tokenformer_streams_migrated_total{kv="moved"}'), 0);
  assert.equal(sample(text, 'tokenformer_streams_migrated_total{kv="recomputed"}'), 0);
  assert.equal(sample(text, 'tokenformer_worker_crashes_total'), 0);
  const check = promtoolCheck(text);
  assert.ok(check.ok, check.output);
});
