// Types for the llamahome JavaScript client.

export const DEFAULT_BASE_URL: string;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The process fields of /api/v1/process (all optional; the daemon's defaults fill the rest). */
export interface GenerationOptions {
  model?: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  repeat_penalty?: number;
  seed?: number;
  stop?: string | string[];
  signal?: AbortSignal;
}

export interface ProcessResponse {
  text: string;
  usage: Usage;
  model: string;
  created: string;
  finish_reason: 'stop' | 'length' | 'cancelled';
  cache?: { hit_tokens: number };
}

export interface StreamChunk {
  chunk: string;
  index: number;
}

export interface StreamFinal {
  done: true;
  usage: Usage;
  finish_reason: 'stop' | 'length' | 'cancelled';
  model: string;
  created: string;
  cache?: { hit_tokens: number };
}

export interface ErrorEnvelope {
  error: { code: string; message: string; details: Record<string, unknown> };
}

export interface ModelInfo {
  id: string;
  name: string;
  version: string | null;
  parameters: string;
  context_length: number | null;
  quantization?: string;
  size?: number;
  capabilities?: string[];
  loaded?: boolean;
  [key: string]: unknown;
}

export interface ClientOptions {
  apiKey?: string;
  /** Default: $LLAMAHOME_ENDPOINT, the local daemon's runtime file, or http://127.0.0.1:8910. */
  baseUrl?: string;
  /** Retries of connection errors, 429 and 503 (default 2). */
  maxRetries?: number;
  /** Milliseconds to wait for a response's headers (default 600000). */
  timeout?: number;
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
}

export class ResponseStream implements AsyncIterable<StreamChunk> {
  /** The last line, set once the iteration finished. */
  final: StreamFinal | undefined;
  abort(): void;
  [Symbol.asyncIterator](): AsyncIterator<StreamChunk>;
}

export class LlamaClient {
  constructor(apiKey?: string, options?: ClientOptions);
  constructor(options: ClientOptions);
  apiKey: string | undefined;
  baseUrl: string | undefined;
  maxRetries: number;
  timeout: number;
  processPrompt(prompt: string, options?: GenerationOptions): Promise<ProcessResponse>;
  processBatch(prompts: string[], options?: GenerationOptions): Promise<Array<ProcessResponse | ErrorEnvelope>>;
  streamResponse(prompt: string, options?: GenerationOptions): ResponseStream;
  listModels(options?: { signal?: AbortSignal }): Promise<ModelInfo[]>;
  getModel(modelId: string, options?: { signal?: AbortSignal }): Promise<ModelInfo>;
  getConfig(options?: { signal?: AbortSignal }): Promise<Record<string, unknown>>;
  updateConfig(changes: Record<string, unknown>, options?: { signal?: AbortSignal }): Promise<Record<string, unknown>>;
}

/** The guide's server-side facade over the local daemon. */
export class LlamaServer extends LlamaClient {
  constructor(options?: ClientOptions);
  process(prompt: string, options?: GenerationOptions): Promise<ProcessResponse>;
}

export class LlamaHomeError extends Error {}

export class APIError extends LlamaHomeError {
  static defaultCode: string;
  constructor(message: string, code?: string, extra?: {
    status?: number; details?: Record<string, unknown>; requestId?: string; retryAfter?: number;
  });
  /** The envelope's stable string code, e.g. "model_not_found". */
  code: string;
  status: number | undefined;
  details: Record<string, unknown>;
  requestId: string | undefined;
  /** Seconds to wait before retrying (RateLimitError, ServerBusyError), when the daemon said. */
  retryAfter?: number;
}
export class InvalidRequestError extends APIError {}
export class ValidationError extends InvalidRequestError {}
export class ContextLengthExceededError extends InvalidRequestError {}
export class AuthenticationError extends APIError {}
export class PermissionDeniedError extends APIError {}
export class HostNotAllowedError extends PermissionDeniedError {}
export class OriginNotAllowedError extends PermissionDeniedError {}
export class NotFoundError extends APIError {}
export class ModelNotFoundError extends NotFoundError {}
export class MethodNotAllowedError extends APIError {}
export class AlreadyExistsError extends APIError {}
export class PayloadTooLargeError extends APIError {}
export class UnsupportedMediaTypeError extends APIError {}
export class RateLimitError extends APIError {}
export class TooManyStreamsError extends RateLimitError {}
export class HeadersTooLargeError extends APIError {}
export class ServerBusyError extends APIError {}
export class ShuttingDownError extends ServerBusyError {}
export class ModelReloadingError extends ServerBusyError {}
export class InternalServerError extends APIError {}
export class ModelLoadError extends InternalServerError {}
export class WorkerCrashedError extends InternalServerError {}
export class QuantizeError extends InternalServerError {}
export class ModelTooLargeError extends APIError {}
export class InsufficientStorageError extends APIError {}
export class DownloadError extends APIError {}
export class DownloadNotFoundError extends DownloadError {}
export class DownloadInterruptedError extends DownloadError {}
export class DigestMismatchError extends DownloadError {}
export class NotGGUFError extends DownloadError {}
export class APIConnectionError extends APIError {}
export class APITimeoutError extends APIConnectionError {}
export function errorClass(code: string | undefined, status: number | undefined): typeof APIError;
export function retryAfterSeconds(headers: Headers | undefined, details?: Record<string, unknown>): number | undefined;
export function errorFromBody(body: unknown, status: number | undefined, headers?: Headers): APIError;
