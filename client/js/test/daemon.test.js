// The client against a real llamahomed (started by tests/e2e/test_js_client.py, which sets
// LLAMAHOME_TEST_URL and LLAMAHOME_TEST_TOKEN and a model store with tiny-llama and tiny-long).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';

import {
  AuthenticationError, ContextLengthExceededError, LlamaClient, LlamaServer, ModelNotFoundError,
  ServerBusyError, ValidationError,
} from '../src/index.js';

const baseUrl = process.env.LLAMAHOME_TEST_URL;
const token = process.env.LLAMAHOME_TEST_TOKEN;
const skip = !baseUrl || !token ? 'set LLAMAHOME_TEST_URL and LLAMAHOME_TEST_TOKEN (tests/e2e/test_js_client.py does)' : false;
const GREEDY = { temperature: 0, max_tokens: 12 };

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

describe('against the real daemon', { skip }, () => {
  const client = new LlamaClient(token, { baseUrl });

  test('processPrompt returns the guide\'s response', async () => {
    const result = await client.processPrompt('the cat sat on', GREEDY);
    assert.equal(typeof result.text, 'string');
    assert.ok(result.text.length > 0);
    assert.equal(result.model, 'tiny-llama');
    assert.equal(result.usage.completion_tokens, 12);
    assert.equal(result.usage.total_tokens, result.usage.prompt_tokens + 12);
    assert.match(result.created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  test('streamResponse yields the same text as processPrompt, then the final line', async () => {
    const whole = await client.processPrompt('in the house', GREEDY);
    const stream = client.streamResponse('in the house', GREEDY);
    const chunks = [];
    for await (const part of stream) chunks.push(part);
    assert.deepEqual(chunks.map((c) => c.index), chunks.map((_, i) => i));
    assert.equal(chunks.map((c) => c.chunk).join(''), whole.text);
    assert.equal(stream.final.done, true);
    assert.deepEqual(stream.final.usage, whole.usage);
  });

  test('leaving a stream early stops the generation on the daemon', async () => {
    const stream = client.streamResponse('the cat', { model: 'tiny-long', temperature: 0, max_tokens: 4000 });
    let seen = 0;
    for await (const part of stream) {
      assert.equal(typeof part.chunk, 'string');
      seen += 1;
      if (seen === 3) break;
    }
    let running = 1;
    for (let i = 0; i < 100 && running !== 0; i += 1) {
      await sleep(50);
      running = (await client.getModel('tiny-long')).runtime.running;
    }
    assert.equal(running, 0);
    assert.equal(stream.final, undefined);
  });

  test('processBatch and listModels', async () => {
    const results = await client.processBatch(['the cat', 'a dog'], GREEDY);
    assert.equal(results.length, 2);
    assert.ok(results.every((r) => r.usage.completion_tokens === 12));
    const models = await client.listModels();
    const tiny = models.find((m) => m.id === 'tiny-llama');
    assert.ok(tiny, JSON.stringify(models));
    assert.equal(tiny.context_length, 256);
  });

  test('daemon errors arrive as typed errors', async () => {
    await assert.rejects(new LlamaClient('not-a-token', { baseUrl }).listModels(), (err) => {
      assert.ok(err instanceof AuthenticationError);
      assert.equal(err.status, 401);
      assert.ok(err.requestId);
      return true;
    });
    await assert.rejects(client.processPrompt('x', { model: 'no-such-model' }), ModelNotFoundError);
    await assert.rejects(client.processPrompt('x', { temperature: -1 }), (err) => {
      assert.ok(err instanceof ValidationError);
      assert.equal(err.details.errors[0].field, 'temperature');
      return true;
    });
    await assert.rejects(client.processPrompt('the cat '.repeat(400)), (err) => {
      assert.ok(err instanceof ContextLengthExceededError);
      assert.equal(err.details.context_length, 256);
      return true;
    });
  });

  test('a full queue is a ServerBusyError with the daemon\'s Retry-After', async () => {
    const before = await client.getConfig();
    await client.updateConfig({ system_settings: { n_slots: 1, max_queue: 0 } });
    const hog = client.streamResponse('the cat', { model: 'tiny-long', temperature: 0, max_tokens: 4000 });
    const iterator = hog[Symbol.asyncIterator]();
    try {
      await iterator.next();
      const impatient = new LlamaClient(token, { baseUrl, maxRetries: 0 });
      await assert.rejects(impatient.processPrompt('hi', { model: 'tiny-long', max_tokens: 2 }), (err) => {
        assert.ok(err instanceof ServerBusyError);
        assert.equal(err.status, 503);
        assert.ok(err.retryAfter >= 1);
        return true;
      });
    } finally {
      await iterator.return();
      await client.updateConfig({ system_settings: {
        n_slots: before.system_settings.n_slots, max_queue: before.system_settings.max_queue } });
    }
  });

  test('the guide\'s require(\'llamahome\') and LlamaServer find the local daemon', async () => {
    const require = createRequire(import.meta.url);
    const { LlamaServer: Required } = require('llamahome');
    assert.equal(Required, LlamaServer);
    // No key and no URL: the daemon's runtime file and admin token in LLAMAHOME_STATE_DIR.
    const llama = new Required();
    const result = await llama.process('hello', { max_tokens: 3 });
    assert.equal(result.usage.completion_tokens, 3);
  });

  test('the examples run (stream.mjs) or at least parse (express-server.cjs, needs express)', async () => {
    const run = promisify(execFile);
    const examples = fileURLToPath(new URL('../examples/', import.meta.url));
    const { stdout } = await run(process.execPath, [`${examples}stream.mjs`, 'the cat'], { timeout: 60_000 });
    const usage = JSON.parse(stdout.trim().split('\n').at(-1));
    assert.equal(usage.completion_tokens, 60);
    await run(process.execPath, ['--check', `${examples}express-server.cjs`]);
  });
});
