// The LlamaHome API client: one request function (retries, timeouts, typed errors) under every
// method. Uses only the platform's fetch, AbortController, TextDecoder and streams.

import {
  APIConnectionError, APITimeoutError, errorFromBody, retryAfterSeconds,
} from './errors.js';

export const DEFAULT_BASE_URL = 'http://127.0.0.1:8910';
const RETRY_STATUSES = new Set([429, 503]);
const MAX_BACKOFF_S = 8;

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * A client for the LlamaHome daemon.
 *
 *   const client = new LlamaClient(apiKey);                       // the guide's form
 *   const client = new LlamaClient(apiKey, { baseUrl, maxRetries, timeout });
 *   const client = new LlamaClient();     // Node: the local daemon's address and admin token
 */
export class LlamaClient {
  constructor(apiKey, options = {}) {
    if (apiKey !== null && typeof apiKey === 'object') {
      options = apiKey;
      apiKey = options.apiKey;
    }
    this.apiKey = apiKey;
    this.baseUrl = options.baseUrl === undefined ? undefined : String(options.baseUrl).replace(/\/+$/, '');
    this.maxRetries = options.maxRetries ?? 2;
    this.timeout = options.timeout ?? 600_000;
    this._fetch = options.fetch ?? ((...args) => globalThis.fetch(...args));
    this._sleep = options.sleep ?? sleep;
    this._resolved = undefined;
  }

  /** POST /api/v1/process: `{text, usage, model, created, finish_reason}`. */
  async processPrompt(prompt, options = {}) {
    const { signal, ...fields } = options;
    const response = await this._request('POST', '/api/v1/process', { prompt, ...fields, stream: false }, signal);
    return response.json();
  }

  /** POST /api/v1/batch: one result (or `{error}`) per prompt, in order. */
  async processBatch(prompts, options = {}) {
    const { signal, ...fields } = options;
    const response = await this._request('POST', '/api/v1/batch', { prompts, ...fields }, signal);
    return (await response.json()).results;
  }

  /**
   * POST /api/v1/stream as an async iterator of `{chunk, index}` objects. After the loop,
   * `stream.final` holds the last line (`usage`, `finish_reason`, ...). Leaving the loop early
   * (or `stream.abort()`) closes the connection, and the daemon stops generating.
   */
  streamResponse(prompt, options = {}) {
    return new ResponseStream(this, prompt, options);
  }

  /** GET /api/v1/models: the installed models. */
  async listModels(options = {}) {
    const response = await this._request('GET', '/api/v1/models', undefined, options.signal);
    return (await response.json()).models;
  }

  /** GET /api/v1/models/{id}. */
  async getModel(modelId, options = {}) {
    const path = `/api/v1/models/${encodeURIComponent(modelId)}`;
    return (await this._request('GET', path, undefined, options.signal)).json();
  }

  /** GET /api/v1/config. */
  async getConfig(options = {}) {
    return (await this._request('GET', '/api/v1/config', undefined, options.signal)).json();
  }

  /** POST /api/v1/config (an admin token): a partial update, merged. */
  async updateConfig(changes, options = {}) {
    return (await this._request('POST', '/api/v1/config', changes, options.signal)).json();
  }

  async _target() {
    if (this._resolved) return this._resolved;
    let { baseUrl, apiKey } = this;
    if (baseUrl === undefined || apiKey === undefined) {
      if (typeof process === 'undefined' || !process.versions?.node) {
        baseUrl ??= DEFAULT_BASE_URL;
      } else {
        const local = await (await import('./local.js')).localDaemon();
        baseUrl ??= local.baseUrl;
        apiKey ??= local.apiKey;
      }
    }
    this._resolved = { baseUrl: baseUrl.replace(/\/+$/, ''), apiKey };
    return this._resolved;
  }

  _backoff(attempt) {
    const base = Math.min(0.5 * 2 ** attempt, MAX_BACKOFF_S);
    return base * (0.75 + Math.random() * 0.25) * 1000;
  }

  /**
   * Send one request; resolve with the Response once a 2xx status arrived. Connection errors,
   * 429 and 503 are retried (up to `maxRetries`, honouring `retry-after-ms` / `Retry-After`,
   * else exponential backoff with jitter); nothing is retried after the first byte of a body.
   */
  async _request(method, path, body, signal) {
    const { baseUrl, apiKey } = await this._target();
    const headers = { Accept: 'application/json' };
    if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    for (let attempt = 0; ; attempt += 1) {
      const controller = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => { timedOut = true; controller.abort(); }, this.timeout);
      const onAbort = () => controller.abort(signal.reason);
      if (signal) {
        if (signal.aborted) controller.abort(signal.reason);
        else signal.addEventListener('abort', onAbort, { once: true });
      }
      let response;
      try {
        response = await this._fetch(`${baseUrl}${path}`, {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body),
          signal: controller.signal,
        });
      } catch (err) {
        if (signal?.aborted) throw err;
        const error = timedOut
          ? new APITimeoutError(`no answer from ${baseUrl} within ${this.timeout} ms`)
          : new APIConnectionError(`cannot reach the LlamaHome daemon at ${baseUrl}: ${err?.cause?.code ?? err?.message ?? err}`);
        if (attempt < this.maxRetries) {
          await this._sleep(this._backoff(attempt));
          continue;
        }
        throw error;
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener?.('abort', onAbort);
      }
      if (response.ok) return response;
      let payload = null;
      try {
        payload = await response.json();
      } catch {
        payload = null;
      }
      const error = errorFromBody(payload, response.status, response.headers);
      const retryable = RETRY_STATUSES.has(response.status)
        && response.headers.get('x-should-retry') !== 'false';
      if (retryable && attempt < this.maxRetries) {
        const wait = retryAfterSeconds(response.headers, error.details);
        await this._sleep(wait === undefined ? this._backoff(attempt) : wait * 1000 * (1 + Math.random() * 0.1));
        continue;
      }
      throw error;
    }
  }
}

/** The NDJSON stream of one generation; see `LlamaClient.streamResponse`. */
export class ResponseStream {
  constructor(client, prompt, options = {}) {
    const { signal, ...fields } = options;
    this._client = client;
    this._body = { prompt, ...fields };
    this._controller = new AbortController();
    if (signal) {
      if (signal.aborted) this._controller.abort(signal.reason);
      else signal.addEventListener('abort', () => this._controller.abort(signal.reason), { once: true });
    }
    /** The final line (`{done: true, usage, finish_reason, model, created}`) once iterated. */
    this.final = undefined;
  }

  /** Stop the generation: the connection closes and the daemon cancels the sequence. */
  abort() {
    this._controller.abort();
  }

  async* [Symbol.asyncIterator]() {
    const response = await this._client._request('POST', '/api/v1/stream', this._body, this._controller.signal);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    const parse = (line) => {
      const data = JSON.parse(line);
      if (data.error) throw errorFromBody(data, response.status, response.headers);
      return data;
    };
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (this._controller.signal.aborted) throw err;
          throw new APIConnectionError(`the stream broke: ${err?.message ?? err}`);
        }
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        let newline = buffer.indexOf('\n');
        while (newline >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          newline = buffer.indexOf('\n');
          if (!line) continue;
          const data = parse(line);
          if (data.done) this.final = data;
          else yield data;
        }
      }
      const rest = (buffer + decoder.decode()).trim();
      if (rest) {
        const data = parse(rest);
        if (data.done) this.final = data;
        else yield data;
      }
      if (!this.final) throw new APIConnectionError('the stream ended before its final line');
    } finally {
      if (!this.final) {
        // Left early (break, throw, abort): close the connection so the daemon cancels.
        this._controller.abort();
        await reader.cancel().catch(() => {});
      }
    }
  }
}
