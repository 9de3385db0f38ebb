// The npm `ollama` package, unmodified, against the real daemon (run by tests/e2e/test_ollama_clients.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';

const host = process.env.LLAMAHOME_TEST_URL;
const token = process.env.LLAMAHOME_TEST_TOKEN;
const model = process.env.LLAMAHOME_TEST_CHAT_MODEL;

test('chat streams NDJSON parts and ends with Ollama statistics', async () => {
  const ollama = new Ollama({ host, headers: { Authorization: `Bearer ${token}` } });
  const stream = await ollama.chat({
    model, stream: true, options: { temperature: 0, num_predict: 12 },
    messages: [{ role: 'user', content: 'What is the capital of France?' }],
  });
  const parts = [];
  for await (const part of stream) parts.push(part);
  assert.ok(parts.length > 2);
  const last = parts[parts.length - 1];
  assert.equal(last.done, true);
  assert.ok(['stop', 'length'].includes(last.done_reason));
  assert.ok(last.eval_count > 0 && last.eval_duration > 0 && last.total_duration > 0);
  const text = parts.map((p) => p.message.content).join('');
  assert.match(text.toLowerCase(), /paris/);
});

test('a missing token is a 401 and an unknown model a 404, in Ollama\'s words', async () => {
  const bare = new Ollama({ host });
  await assert.rejects(bare.list(), (err) => err.status_code === 401);
  const ollama = new Ollama({ host, headers: { Authorization: `Bearer ${token}` } });
  await assert.rejects(ollama.show({ model: 'nope' }),
    (err) => err.status_code === 404 && err.error === "model 'nope' not found");
  const listed = await ollama.list();
  assert.ok(listed.models.some((m) => m.name === `${model}:latest`));
});
