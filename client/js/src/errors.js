// Typed errors: one class per code of the daemon's error envelope
// {"error": {"code", "message", "details"}}, mirroring the Python package's llamahome.error.
// The codes and their statuses are one table, client/llamahome/codes.py; a test
// (tests/client/test_error_codes.py) holds the `defaultCode`s here to it.

export class LlamaHomeError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** An error reported by the daemon (or met while talking to it). */
export class APIError extends LlamaHomeError {
  static defaultCode = 'api_error';

  /**
   * @param {string} message
   * @param {string} [code] the envelope's stable string code
   * @param {{status?: number, details?: object, requestId?: string, retryAfter?: number}} [extra]
   */
  constructor(message, code, { status, details, requestId, retryAfter } = {}) {
    super(message);
    this.message = message;
    this.code = code ?? new.target.defaultCode;
    this.status = status;
    this.details = details ?? {};
    this.requestId = requestId;
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

export class InvalidRequestError extends APIError { static defaultCode = 'invalid_request'; }
export class ValidationError extends InvalidRequestError { static defaultCode = 'validation_error'; }
export class ContextLengthExceededError extends InvalidRequestError {
  static defaultCode = 'context_length_exceeded';
}
export class AuthenticationError extends APIError { static defaultCode = 'authentication_error'; }
export class PermissionDeniedError extends APIError { static defaultCode = 'permission_denied'; }
/** 403: the daemon refused the Host header (not loopback, not in `allowed_hosts`). */
export class HostNotAllowedError extends PermissionDeniedError {
  static defaultCode = 'host_not_allowed';
}
/** 403: the daemon refused the browser Origin (not in `allowed_origins`). */
export class OriginNotAllowedError extends PermissionDeniedError {
  static defaultCode = 'origin_not_allowed';
}
export class NotFoundError extends APIError { static defaultCode = 'not_found'; }
export class ModelNotFoundError extends NotFoundError { static defaultCode = 'model_not_found'; }
export class MethodNotAllowedError extends APIError { static defaultCode = 'method_not_allowed'; }
/** 409: the file a request would create exists, or another pull is making it. */
export class AlreadyExistsError extends APIError { static defaultCode = 'already_exists'; }
export class PayloadTooLargeError extends APIError { static defaultCode = 'payload_too_large'; }
export class UnsupportedMediaTypeError extends APIError {
  static defaultCode = 'unsupported_media_type';
}
/** 429: this client is over its quota; `retryAfter` is in seconds when the daemon said. */
export class RateLimitError extends APIError { static defaultCode = 'rate_limit_exceeded'; }
/** 429: this token's user has as many streams open as allowed; one ending frees a slot. */
export class TooManyStreamsError extends RateLimitError { static defaultCode = 'too_many_streams'; }
/** 431: the request headers are larger than the daemon accepts. */
export class HeadersTooLargeError extends APIError { static defaultCode = 'headers_too_large'; }
/** 503: the model's queue is full; `retryAfter` is in seconds when the daemon said. */
export class ServerBusyError extends APIError { static defaultCode = 'server_busy'; }
export class ShuttingDownError extends ServerBusyError { static defaultCode = 'shutting_down'; }
/** 503: the model was reloaded with new settings while the request ran; retry it. */
export class ModelReloadingError extends ServerBusyError { static defaultCode = 'model_reloading'; }
export class InternalServerError extends APIError { static defaultCode = 'internal_error'; }
export class ModelLoadError extends InternalServerError { static defaultCode = 'model_load_failed'; }
export class WorkerCrashedError extends InternalServerError { static defaultCode = 'worker_crashed'; }
/** 500: llama.cpp could not quantize the model. */
export class QuantizeError extends InternalServerError { static defaultCode = 'quantize_failed'; }
/** 507: no variant of the model fits this machine's free memory (`details` say what would). */
export class ModelTooLargeError extends APIError { static defaultCode = 'model_too_large'; }
/** 507: not enough free disk space for a download or a quantized variant. */
export class InsufficientStorageError extends APIError {
  static defaultCode = 'insufficient_storage';
}
/** 502: a model download failed (unreachable host, an HTTP error, a size mismatch). */
export class DownloadError extends APIError { static defaultCode = 'download_failed'; }
/** 404: the download server answered 404 or 410. */
export class DownloadNotFoundError extends DownloadError { static defaultCode = 'download_not_found'; }
/** 502: the transfer broke off; the next pull resumes the partial file. */
export class DownloadInterruptedError extends DownloadError {
  static defaultCode = 'download_interrupted';
}
/** 502: the downloaded file's sha256 is not the expected one. */
export class DigestMismatchError extends DownloadError { static defaultCode = 'digest_mismatch'; }
/** 502: the downloaded content is not a GGUF file. */
export class NotGGUFError extends DownloadError { static defaultCode = 'not_gguf'; }
/** The daemon could not be reached, or the connection broke (no status). */
export class APIConnectionError extends APIError { static defaultCode = 'connection_error'; }
export class APITimeoutError extends APIConnectionError { static defaultCode = 'timeout'; }

const BY_CODE = {};
for (const cls of [InvalidRequestError, ValidationError, ContextLengthExceededError,
  AuthenticationError, PermissionDeniedError, HostNotAllowedError, OriginNotAllowedError,
  NotFoundError, ModelNotFoundError, MethodNotAllowedError, AlreadyExistsError,
  PayloadTooLargeError, UnsupportedMediaTypeError, RateLimitError, TooManyStreamsError,
  HeadersTooLargeError, ServerBusyError, ShuttingDownError, ModelReloadingError, InternalServerError,
  ModelLoadError,
  WorkerCrashedError, QuantizeError, ModelTooLargeError, InsufficientStorageError, DownloadError,
  DownloadNotFoundError, DownloadInterruptedError, DigestMismatchError, NotGGUFError]) {
  BY_CODE[cls.defaultCode] = cls;
}

const BY_STATUS = {
  400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
  404: NotFoundError, 405: MethodNotAllowedError, 409: AlreadyExistsError,
  413: PayloadTooLargeError, 415: UnsupportedMediaTypeError, 422: ValidationError,
  429: RateLimitError, 431: HeadersTooLargeError, 503: ServerBusyError,
};

/** The error class for an envelope code, falling back on the HTTP status. */
export function errorClass(code, status) {
  if (code && BY_CODE[code]) return BY_CODE[code];
  if (status && BY_STATUS[status]) return BY_STATUS[status];
  return status >= 500 ? InternalServerError : APIError;
}

/** Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date). */
export function retryAfterSeconds(headers, details) {
  const ms = headers?.get?.('retry-after-ms');
  if (ms && Number.isFinite(Number(ms))) return Math.max(0, Number(ms) / 1000);
  const value = headers?.get?.('retry-after');
  if (value) {
    if (Number.isFinite(Number(value))) return Math.max(0, Number(value));
    const date = Date.parse(value);
    if (!Number.isNaN(date)) return Math.max(0, (date - Date.now()) / 1000);
  }
  const fromBody = details?.retry_after;
  return typeof fromBody === 'number' && Number.isFinite(fromBody) ? Math.max(0, fromBody) : undefined;
}

/** Build the typed error for an error envelope (or anything else the daemon answered). */
export function errorFromBody(body, status, headers) {
  const error = body && typeof body === 'object' && body.error && typeof body.error === 'object'
    ? body.error : {};
  const code = typeof error.code === 'string' ? error.code : undefined;
  const message = typeof error.message === 'string' && error.message
    ? error.message : `HTTP ${status ?? 'error'}`;
  const details = error.details && typeof error.details === 'object' ? error.details : {};
  const cls = errorClass(code, status);
  const requestId = headers?.get?.('x-request-id') ?? undefined;
  const waits = [RateLimitError, ServerBusyError]
    .some((base) => cls === base || cls.prototype instanceof base);
  const retryAfter = waits ? retryAfterSeconds(headers, details) : undefined;
  return new cls(message, code, { status, details, requestId, retryAfter });
}
