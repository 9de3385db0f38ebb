// HTTP-layer logic of the client (retries, Retry-After, error mapping) against a scripted local
// HTTP server; everything else is tested against the real daemon in daemon.test.js.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import * as llamahome from '../src/index.js';
import {
  APIConnectionError, APIError, AuthenticationError, ContextLengthExceededError,
  InternalServerError, LlamaClient, ModelNotFoundError, ModelTooLargeError, RateLimitError,
  ServerBusyError, TooManyStreamsError, ValidationError, WorkerCrashedError, errorClass,
  errorFromBody,
} from '../src/index.js';

let server;
let baseUrl;
let script = [];
let calls = [];

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (part) => { body += part; });
    req.on('end', () => {
      calls.push({ method: req.method, url: req.url, auth: req.headers.authorization, body });
      const [status, headers, reply] = script.shift() ?? [500, {}, { error: { code: 'internal_error', message: 'unscripted' } }];
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(typeof reply === 'string' ? reply : JSON.stringify(reply));
    });
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(() => new Promise((resolve) => { server.close(resolve); }));

function client(options = {}) {
  const waits = [];
  const c = new LlamaClient('tok', { baseUrl, sleep: async (ms) => { waits.push(ms); }, ...options });
  return { c, waits };
}

const OK = [200, {}, { text: 'hi', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }];
const busy = (headers) => [503, headers, { error: { code: 'server_busy', message: 'full', details: { retry_after: 3 } } }];

describe('retries', () => {
  test('a 429 is retried after retry-after-ms, with the bearer token and JSON body', async () => {
    script = [[429, { 'retry-after-ms': '40' }, { error: { code: 'rate_limit_exceeded', message: 'slow down', details: {} } }], OK];
    calls = [];
    const { c, waits } = client();
    const result = await c.processPrompt('hello', { max_tokens: 3 });
    assert.equal(result.text, 'hi');
    assert.equal(calls.length, 2);
    assert.equal(calls[0].auth, 'Bearer tok');
    assert.deepEqual(JSON.parse(calls[0].body), { prompt: 'hello', max_tokens: 3, stream: false });
    assert.equal(waits.length, 1);
    assert.ok(waits[0] >= 40 && waits[0] <= 44, `waited ${waits[0]}`);
  });

  test('a 503 honours Retry-After in seconds, then gives up with ServerBusyError', async () => {
    script = [busy({ 'Retry-After': '2' }), busy({ 'Retry-After': '2' }), busy({ 'Retry-After': '2' })];
    calls = [];
    const { c, waits } = client({ maxRetries: 2 });
    await assert.rejects(c.processPrompt('x'), (err) => {
      assert.ok(err instanceof ServerBusyError);
      assert.equal(err.status, 503);
      assert.equal(err.code, 'server_busy');
      assert.equal(err.retryAfter, 2);
      return true;
    });
    assert.equal(calls.length, 3);
    assert.ok(waits.every((ms) => ms >= 2000 && ms <= 2200), waits.join());
  });

  test('without a header the backoff grows exponentially with jitter', async () => {
    script = [[503, {}, 'not json'], [503, {}, 'not json'], OK];
    const { c, waits } = client();
    assert.equal((await c.processPrompt('x')).text, 'hi');
    assert.ok(waits[0] >= 375 && waits[0] <= 500, `first wait ${waits[0]}`);
    assert.ok(waits[1] >= 750 && waits[1] <= 1000, `second wait ${waits[1]}`);
  });

  test('x-should-retry: false and 4xx are not retried', async () => {
    script = [[503, { 'x-should-retry': 'false' }, { error: { code: 'server_busy', message: 'no' } }]];
    calls = [];
    const { c } = client();
    await assert.rejects(c.processPrompt('x'), ServerBusyError);
    assert.equal(calls.length, 1);
    script = [[401, {}, { error: { code: 'authentication_error', message: 'bad token', details: {} } }]];
    calls = [];
    await assert.rejects(c.processPrompt('x'), AuthenticationError);
    assert.equal(calls.length, 1);
  });

  test('connection errors are retried, then an APIConnectionError', async () => {
    const closed = createServer();
    await new Promise((resolve) => { closed.listen(0, '127.0.0.1', resolve); });
    const port = closed.address().port;
    await new Promise((resolve) => { closed.close(resolve); });
    const waits = [];
    const c = new LlamaClient('tok', { baseUrl: `http://127.0.0.1:${port}`, maxRetries: 1, sleep: async (ms) => { waits.push(ms); } });
    await assert.rejects(c.listModels(), (err) => err instanceof APIConnectionError && err.code === 'connection_error');
    assert.equal(waits.length, 1);
  });
});

describe('errors', () => {
  test('every envelope code has its class', () => {
    const cases = [
      ['model_not_found', 404, ModelNotFoundError],
      ['validation_error', 422, ValidationError],
      ['context_length_exceeded', 400, ContextLengthExceededError],
      ['rate_limit_exceeded', 429, RateLimitError],
      ['worker_crashed', 500, WorkerCrashedError],
    ];
    for (const [code, status, cls] of cases) {
      const err = errorFromBody({ error: { code, message: 'm', details: { a: 1 } } }, status, new Headers({ 'x-request-id': 'r1' }));
      assert.ok(err instanceof cls, code);
      assert.equal(err.code, code);
      assert.equal(err.status, status);
      assert.deepEqual(err.details, { a: 1 });
      assert.equal(err.requestId, 'r1');
      assert.equal(err.name, cls.name);
    }
    assert.ok(errorFromBody({ error: { code: 'worker_crashed', message: 'm' } }, 500) instanceof InternalServerError);
    const unknown = errorFromBody('<html>', 502, new Headers());
    assert.ok(unknown instanceof InternalServerError);
    assert.equal(unknown.message, 'HTTP 502');
  });

  test('every exported error class is the one its code maps to', () => {
    const clientSide = new Set(['api_error', 'connection_error', 'timeout']);
    const classes = Object.values(llamahome)
      .filter((value) => value === APIError || value?.prototype instanceof APIError);
    assert.ok(classes.length >= 30, String(classes.length));
    for (const cls of classes) {
      if (clientSide.has(cls.defaultCode)) continue;
      assert.equal(errorClass(cls.defaultCode, 500), cls, cls.defaultCode);
    }
  });

  test('a 507 model_too_large and a 429 too_many_streams have their own classes', () => {
    const big = errorFromBody({ error: { code: 'model_too_large', message: 'm' } }, 507);
    assert.ok(big instanceof ModelTooLargeError && !(big instanceof InternalServerError));
    const streams = errorFromBody({ error: { code: 'too_many_streams', message: 'm' } }, 429,
      new Headers({ 'retry-after': '1' }));
    assert.ok(streams instanceof TooManyStreamsError && streams instanceof RateLimitError);
    assert.equal(streams.retryAfter, 1);
  });
});
