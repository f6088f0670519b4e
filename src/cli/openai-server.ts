/**
 * The OpenAI-compatible HTTP server of `tensorwright serve`, on `node:http`: `POST /v1/completions` and
 * `POST /v1/chat/completions` (JSON, or server-sent events with `stream: true`), `GET /v1/models`, `GET /metrics`
 * (Prometheus text) and `GET /health`. Errors have OpenAI's shape, `{ error: { message, type, param, code } }`: 400
 * for a malformed or invalid request (a prompt longer than the context included), 404 for an unknown model or
 * path, 405 for a wrong method, 413 for a body that is too large, 429 when the queue is full, 500 otherwise; no
 * request can stop the server. A client that disconnects aborts its request, which frees its KV blocks.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { InputError, OverloadedError, TensorwrightError } from '../errors.js';
import type { ServingEvent, ServingRequest, ServingSession } from '../runtime/serving/serving-session.js';
import { metricsToPrometheus } from '../runtime/serving/serving-metrics.js';
import type { TextTokenizer } from '../tokenizers/text-tokenizer.js';
import type { ChatMessage, ChatTemplate } from './chat-template.js';

/** A model the server can run. */
export interface ServedModel {
  /** The name clients pass as `model`. */
  readonly id: string;
  /** Its serving session. */
  readonly session: ServingSession;
  /** Its tokenizer (text prompts and output need one; without it, prompts are token ids and text is empty). */
  readonly tokenizer?: TextTokenizer;
  /** Its chat template. */
  readonly chat: ChatTemplate;
  /** Its context length. */
  readonly maxPositions: number;
  /** Its vocabulary size. */
  readonly vocabSize: number;
  /** Memory it holds (GPU buffers, or host memory on the CPU backend), when known. */
  readonly memoryBytes?: number;
  /** Its requests run in a sliding KV window (`--kv-window`), so prompt and completion may exceed the context. */
  readonly slidingWindow?: boolean;
}

/** Where the server gets its models (one loaded model, or a folder of them loaded on demand). */
export interface ModelProvider {
  /** Names of the models that can be served. */
  ids(): readonly string[];
  /** The model named `id`, loading it if needed; undefined for an unknown name. */
  get(id: string): Promise<ServedModel | undefined>;
  /** The models loaded now (for metrics). */
  loaded(): readonly ServedModel[];
}

/** An error answered with an HTTP status and OpenAI's error body. */
export class HttpError extends Error {
  constructor(
    /** HTTP status. */
    readonly status: number,
    message: string,
    /** OpenAI error type (`invalid_request_error`, `not_found_error`, …). */
    readonly type: string,
    /** Machine-readable code. */
    readonly code: string | null = null,
    /** The request field at fault. */
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** Options of {@link createOpenAiServer}. */
export interface OpenAiServerOptions {
  /** Largest request body in bytes (default 4 MiB). */
  readonly maxBodyBytes?: number;
}

const bad = (message: string, param: string | null = null, code: string | null = null): HttpError => new HttpError(400, message, 'invalid_request_error', code, param);

/** Creates the server (not listening yet). */
export function createOpenAiServer(models: ModelProvider, options: OpenAiServerOptions = {}): Server {
  const maxBody = options.maxBodyBytes ?? 4 * 2 ** 20;
  const server = createServer((req, res) => {
    handle(req, res, models, maxBody).catch((e: unknown) => sendError(res, e));
  });
  return server;
}

async function handle(req: IncomingMessage, res: ServerResponse, models: ModelProvider, maxBody: number): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const route = (method: string): void => {
    if (req.method !== method) throw new HttpError(405, `${path} takes ${method}, not ${req.method}`, 'invalid_request_error', 'method_not_allowed');
  };
  switch (path) {
    case '/health':
      route('GET');
      return sendJson(res, 200, { status: 'ok' });
    case '/v1/models':
      route('GET');
      return sendJson(res, 200, {
        object: 'list',
        data: await Promise.all(
          models.ids().map(async (id) => {
            const m = models.loaded().find((x) => x.id === id);
            return { id, object: 'model', created: 0, owned_by: 'tensorwright', ...(m ? { max_model_len: m.maxPositions, vocab_size: m.vocabSize } : {}) };
          }),
        ),
      });
    case '/metrics':
      route('GET');
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(metricsToPrometheus(models.loaded().map((m) => ({ labels: { model: m.id }, metrics: m.session.metrics() }))));
      return;
    case '/v1/completions':
    case '/v1/chat/completions': {
      route('POST');
      const body = await readJson(req, maxBody);
      return complete(req, res, models, body, path === '/v1/chat/completions');
    }
    default:
      throw new HttpError(404, `no route ${path}`, 'not_found_error', 'not_found');
  }
}

/** Reads a JSON object body; malformed JSON or a body over the limit is an {@link HttpError}. */
async function readJson(req: IncomingMessage, maxBody: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > maxBody) throw new HttpError(413, `the request body is larger than ${maxBody} bytes`, 'invalid_request_error', 'body_too_large');
    chunks.push(c as Buffer);
  }
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw bad(`the request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json');
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad('the request body must be a JSON object', null, 'invalid_json');
  return v as Record<string, unknown>;
}

/** A number field: absent (undefined), or finite within bounds (integer when asked). */
function numberField(body: Record<string, unknown>, name: string, o: { int?: boolean; min?: number; max?: number } = {}): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || (o.int && !Number.isInteger(v)) || (o.min !== undefined && v < o.min) || (o.max !== undefined && v > o.max))
    throw bad(`${name} must be ${o.int ? 'an integer' : 'a number'}${o.min !== undefined ? ` >= ${o.min}` : ''}${o.max !== undefined ? ` and <= ${o.max}` : ''}, got ${JSON.stringify(v)}`, name);
  return v;
}

function isIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
}

/** The prompt of a completions request: text, or token ids (one prompt only). */
function completionPrompt(body: Record<string, unknown>): { prompt?: string; promptIds?: number[] } {
  let p = body.prompt;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || isIds(p[0]))) p = p[0];
  if (typeof p === 'string') return { prompt: p };
  if (isIds(p)) {
    if (!p.every((x) => Number.isInteger(x) && x >= 0)) throw bad('prompt token ids must be non-negative integers', 'prompt');
    return { promptIds: p };
  }
  if (Array.isArray(p) && p.length > 1) throw bad('one prompt per request (batches of prompts are not supported)', 'prompt');
  throw bad('prompt must be a string or an array of token ids', 'prompt');
}

function chatMessages(body: Record<string, unknown>): ChatMessage[] {
  const m = body.messages;
  if (!Array.isArray(m) || m.length === 0) throw bad('messages must be a non-empty array', 'messages');
  return m.map((x, i) => {
    if (!x || typeof x !== 'object' || typeof (x as { role?: unknown }).role !== 'string') throw bad(`messages[${i}] must be an object with a role`, `messages[${i}]`);
    let content = (x as { content?: unknown }).content ?? '';
    // content parts: keep the text ones
    if (Array.isArray(content)) content = content.map((c: { type?: unknown; text?: unknown }) => (c && c.type === 'text' && typeof c.text === 'string' ? c.text : '')).join('');
    if (typeof content !== 'string') throw bad(`messages[${i}].content must be a string`, `messages[${i}].content`);
    return { role: (x as { role: string }).role, content };
  });
}

/** Most choices (`n`) one request may ask for. */
export const MAX_CHOICES = 16;

async function complete(req: IncomingMessage, res: ServerResponse, models: ModelProvider, body: Record<string, unknown>, chat: boolean): Promise<void> {
  const ids = models.ids();
  const name = body.model === undefined && ids.length === 1 ? ids[0] : body.model;
  if (typeof name !== 'string') throw bad('model must be a string', 'model');
  const model = await models.get(name);
  if (!model) throw new HttpError(404, `the model '${name}' does not exist (models: ${ids.join(', ')})`, 'invalid_request_error', 'model_not_found', 'model');
  // n > 1: n requests on one prompt (its blocks shared through the prefix cache), choice i seeded with seed + i
  const n = numberField(body, 'n', { int: true, min: 1, max: MAX_CHOICES }) ?? 1;
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== 'boolean') throw bad('stream must be a boolean', 'stream');
  const stream = body.stream === true;
  const stop = body.stop;
  if (!(stop === undefined || stop === null || typeof stop === 'string' || (Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === 'string'))))
    throw bad('stop must be a string or an array of at most 4 strings', 'stop');
  let input: { prompt?: string; promptIds?: number[] };
  if (chat) {
    if (!model.tokenizer) throw bad(`the model '${name}' has no tokenizer, so it cannot chat; use /v1/completions with token ids`, 'messages');
    input = { prompt: model.chat.render(chatMessages(body)) };
  } else input = completionPrompt(body);
  if (input.prompt !== undefined && !model.tokenizer) throw bad(`the model '${name}' has no tokenizer: send the prompt as token ids`, 'prompt');
  const promptIds = model.session.promptIdsOf(input);
  const context = model.maxPositions;
  if (promptIds.length > context && !model.slidingWindow) throw bad(`this model's maximum context length is ${context} tokens, but the prompt has ${promptIds.length} tokens`, chat ? 'messages' : 'prompt', 'context_length_exceeded');
  const maxTokensField = chat ? (body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens') : 'max_tokens';
  const asked = numberField(body, maxTokensField, { int: true, min: 1 });
  const maxTokens = asked ?? (chat ? (model.slidingWindow ? context : context - promptIds.length + 1) : 16);
  if (promptIds.length + maxTokens > context + 1 && !model.slidingWindow)
    throw bad(`this model's maximum context length is ${context} tokens, but ${promptIds.length} prompt tokens and ${maxTokens} completion tokens were asked for`, maxTokensField, 'context_length_exceeded');
  const ac = new AbortController();
  const request: ServingRequest = {
    promptIds,
    maxTokens,
    temperature: numberField(body, 'temperature', { min: 0, max: 2 }) ?? 1,
    topP: numberField(body, 'top_p', { min: 0, max: 1 }) ?? 1,
    topK: numberField(body, 'top_k', { int: true, min: 0 }) ?? 0,
    seed: numberField(body, 'seed', { int: true }),
    stop: stop === null ? undefined : (stop as string | string[] | undefined),
    ignoreStopTokens: body.ignore_eos === true,
    priority: numberField(body, 'priority'),
    signal: ac.signal,
  };
  if (request.stop !== undefined && !model.tokenizer) throw bad(`stop strings need a tokenizer; the model '${name}' has none`, 'stop');
  const streams: AsyncIterable<ServingEvent>[] = [];
  try {
    for (let i = 0; i < n; i++) streams.push(model.session.submit(i === 0 || request.seed === undefined ? request : { ...request, seed: request.seed + i }));
  } catch (e) {
    ac.abort();
    if (e instanceof OverloadedError) throw new HttpError(429, e.message, 'rate_limit_error', 'server_overloaded');
    throw e;
  }
  // a client that goes away cancels the request (and frees its blocks)
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  req.on('aborted', () => ac.abort());
  if (res.destroyed) ac.abort();
  const id = `${chat ? 'chatcmpl' : 'cmpl'}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
  const created = Math.floor(Date.now() / 1000);
  const usage = (prompt: number, completion: number): Record<string, number> => ({ prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion });
  if (!stream) {
    // every choice's text and finish; an aborted one (the client left) ends the response with nothing sent
    const finished = await Promise.all(
      streams.map(async (events) => {
        let text = '';
        for await (const e of events) {
          text += e.text;
          if (e.type === 'finish') return { text, finish: e };
        }
        return undefined;
      }),
    );
    if (finished.some((f) => !f || f.finish.reason === 'abort')) return;
    const choices = finished.map((f, index) => {
      const reason = f!.finish.reason === 'deadline' ? 'length' : f!.finish.reason;
      return chat ? { index, message: { role: 'assistant', content: f!.text }, logprobs: null, finish_reason: reason } : { index, text: f!.text, logprobs: null, finish_reason: reason };
    });
    const completion = finished.reduce((a, f) => a + f!.finish.completionTokens, 0);
    return sendJson(res, 200, { id, object: chat ? 'chat.completion' : 'text_completion', created, model: name, choices, usage: usage(finished[0]!.finish.promptTokens, completion) });
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const object = chat ? 'chat.completion.chunk' : 'text_completion';
  const send = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}): void => {
    if (!res.writableEnded) res.write(`data: ${JSON.stringify({ id, object, created, model: name, choices: [choice], ...extra })}\n\n`);
  };
  const includeUsage = !!(body.stream_options && typeof body.stream_options === 'object' && (body.stream_options as { include_usage?: unknown }).include_usage === true);
  let promptTokens = 0;
  let completionTokens = 0;
  let aborted = false;
  try {
    // the choices' chunks interleave as their tokens come, each with its index
    await Promise.all(
      streams.map(async (events, index) => {
        if (chat) send({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
        for await (const e of events) {
          if (e.type === 'token') {
            send(chat ? { index, delta: { content: e.text }, logprobs: null, finish_reason: null } : { index, text: e.text, logprobs: null, finish_reason: null });
            continue;
          }
          if (e.reason === 'abort') {
            aborted = true;
            return;
          }
          const reason = e.reason === 'deadline' ? 'length' : e.reason;
          send(chat ? { index, delta: e.text ? { content: e.text } : {}, logprobs: null, finish_reason: reason } : { index, text: e.text, logprobs: null, finish_reason: reason });
          promptTokens = e.promptTokens;
          completionTokens += e.completionTokens;
        }
      }),
    );
    if (aborted) return;
    if (includeUsage && !res.writableEnded) res.write(`data: ${JSON.stringify({ id, object, created, model: name, choices: [], usage: usage(promptTokens, completionTokens) })}\n\n`);
  } catch (e) {
    ac.abort();
    if (!res.writableEnded) res.write(`data: ${JSON.stringify(errorBody(e).body)}\n\n`);
  }
  if (!res.writableEnded) res.end('data: [DONE]\n\n');
}

function sendJson(res: ServerResponse, status: number, v: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(v);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The status and OpenAI error body of an error. */
export function errorBody(e: unknown): { status: number; body: { error: { message: string; type: string; param: string | null; code: string | null } } } {
  if (e instanceof HttpError) return { status: e.status, body: { error: { message: e.message, type: e.type, param: e.param, code: e.code } } };
  if (e instanceof InputError) return { status: 400, body: { error: { message: e.message, type: 'invalid_request_error', param: null, code: e.code } } };
  if (e instanceof OverloadedError) return { status: 429, body: { error: { message: e.message, type: 'rate_limit_error', param: null, code: e.code } } };
  if (e instanceof TensorwrightError) return { status: 500, body: { error: { message: e.message, type: 'server_error', param: null, code: e.code } } };
  return { status: 500, body: { error: { message: (e as Error)?.message ?? String(e), type: 'server_error', param: null, code: null } } };
}

function sendError(res: ServerResponse, e: unknown): void {
  const { status, body } = errorBody(e);
  if (res.headersSent) {
    if (!res.writableEnded) res.end();
    return;
  }
  sendJson(res, status, body);
}
