// llamahome: the JavaScript client for the LlamaHome daemon (dependency-free ES module).

import { LlamaClient } from './client.js';

export { DEFAULT_BASE_URL, LlamaClient, ResponseStream } from './client.js';
export * from './errors.js';

/**
 * The guide's server-side facade: `await new LlamaServer().process(prompt)` answers from the
 * daemon running for this user (its address and admin token are found as LlamaClient finds
 * them), for embedding LlamaHome in a Node web app such as Express.
 */
export class LlamaServer extends LlamaClient {
  /** The process response for `prompt` (`{text, usage, model, created, finish_reason}`). */
  async process(prompt, options = {}) {
    return this.processPrompt(prompt, options);
  }
}
