import assert from 'node:assert/strict';
import { test } from 'node:test';
import { API_ERRORS, ApiError, quoted, toApiError } from '../../src/server/errors.ts';
import { TokenFormerError } from '../../src/util/errors.ts';

test('named codes map to their HTTP status; 429 carries Retry-After', () => {
  assert.equal(API_ERRORS.TF_ERR_QUEUE_FULL.status, 429);
  assert.equal(API_ERRORS.TF_ERR_BAD_ARGS.status, 400);
  assert.equal(API_ERRORS.TF_ERR_CONTEXT_LENGTH.status, 400);
  assert.equal(API_ERRORS.TF_ERR_BODY_TOO_LARGE.status, 413);
  assert.equal(API_ERRORS.TF_ERR_NOT_FOUND.status, 404);
  assert.equal(API_ERRORS.TF_ERR_INTERNAL.status, 500);
  const queue = toApiError(new TokenFormerError('TF_ERR_QUEUE_FULL', 'the queue is full'));
  assert.equal(queue.status, 429);
  assert.equal(queue.headers['retry-after'], '1');
  assert.deepEqual(queue.body, {
    error: { message: 'the queue is full', type: 'rate_limit_error', code: 'TF_ERR_QUEUE_FULL' },
  });
  const ctx = toApiError(new TokenFormerError('TF_ERR_CONTEXT_LENGTH', 'too long'));
  assert.deepEqual([ctx.status, ctx.code, ctx.internal], [400, 'TF_ERR_CONTEXT_LENGTH', false]);
  const mine = toApiError(new ApiError('TF_ERR_TIMEOUT', 'slow'));
  assert.deepEqual([mine.status, mine.body.error.type], [504, 'timeout_error']);
  assert.deepEqual(toApiError(new ApiError('TF_ERR_BAD_ARGS', 'x')).headers, {});
});

test('fastify errors: validation 400, body too large 413, bad JSON 400, media type 415', () => {
  const validation = Object.assign(new Error('body/prompt must be string'), {
    validation: [{}],
    statusCode: 400,
  });
  assert.deepEqual(
    [toApiError(validation).status, toApiError(validation).body.error.message],
    [400, 'body/prompt must be string'],
  );
  const big = Object.assign(new RangeError('Request body is too large'), {
    code: 'FST_ERR_CTP_BODY_TOO_LARGE',
    statusCode: 413,
  });
  const mapped = toApiError(big, { bodyLimit: 1024 });
  assert.equal(mapped.status, 413);
  assert.match(mapped.body.error.message, /limit of 1024 bytes/);
  const json = Object.assign(new SyntaxError('Unexpected end'), {
    code: 'FST_ERR_CTP_INVALID_JSON_BODY',
    statusCode: 400,
  });
  assert.equal(toApiError(json).code, 'TF_ERR_BAD_ARGS');
  const media = Object.assign(new Error('Unsupported'), {
    code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE',
    statusCode: 415,
  });
  assert.equal(toApiError(media).status, 415);
});

test('internal errors never show their message, stack or paths; they name the request id', () => {
  const leaks = [
    new Error('ENOENT: /work/main/models/x/model.onnx'),
    new TokenFormerError('TF_ERR_RUNTIME', 'model worker exited (code 1) at /srv/x.ts:12'),
    new TokenFormerError('TF_ERR_BAD_CHECKPOINT', '/models/x: missing weights'),
    'a thrown string',
    undefined,
  ];
  for (const err of leaks) {
    const m = toApiError(err, { requestId: 'req-7' });
    assert.equal(m.status, 500);
    assert.equal(m.internal, true);
    assert.deepEqual(Object.keys(m.body.error).sort(), ['code', 'message', 'type']);
    assert.equal(m.body.error.message, 'internal error; the server log has details (request id req-7)');
    assert.equal(m.body.error.code, 'TF_ERR_INTERNAL');
  }
});

test('quoted: client values in messages are cut short and never stringified whole', () => {
  assert.equal(quoted('gpt-4'), '"gpt-4"');
  assert.equal(quoted('x'.repeat(1_000_000)), `"${'x'.repeat(80)}…"`);
  assert.equal(quoted(7), '7');
  assert.equal(quoted(undefined), 'undefined');
  assert.equal(quoted(null), 'null');
  // 10 000 levels would overflow JSON.stringify's stack (found by test/server/fuzz.test.ts).
  assert.equal(quoted(JSON.parse(`${'['.repeat(10_000)}${']'.repeat(10_000)}`)), 'an array');
  assert.equal(quoted({ a: 1 }), 'an object');
});
