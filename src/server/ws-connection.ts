import type { FastifyBaseLogger } from 'fastify';
import type { FinishReason } from '../engine/protocol.ts';
import type { ModelRef } from '../engine/text-stream.ts';
import { type ChatBody, type ChatTemplates, parseChatRequest } from './chat.ts';
import { chatTokenLogprobs } from './chat-openai.ts';
import { type CompletionBody, parseCompletionRequest } from './completion.ts';
import type { Job, ServerContext } from './context.ts';
import { ApiError, quoted, toApiError } from './errors.ts';
import { runCompletion } from './generate.ts';
import { usage } from './openai.ts';
import { TokenBucket } from './token-bucket.ts';
import { sendWithBackpressure, type WsSocket } from './ws-send.ts';

/**
 * One WebSocket connection of GET /v1/stream: many completions multiplexed by the client's `id`
 * (protocol in PROTOCOL.md). It is a thin adapter over the same completion stream as SSE; it only
 * adds ids, per-connection limits, cancellation by message, backpressure and keep-alive pings.
 */

/** Checks a `completion.create` message against the completions body schema: the problem, or null. */
export type Validate = (msg: unknown) => { message: string; param?: string | undefined } | null;

const MAX_ID_LENGTH = 200;

/** `model` (the name the request used) and `system_fingerprint` (the version that produced it) of a delta, as in SSE chunks. */
function producedBy(
  name: string,
  model: ModelRef | undefined,
): { model: string; system_fingerprint?: string } {
  return model ? { model: name, system_fingerprint: model.version } : { model: name };
}
const ROUTE = '/v1/stream';

export class WsConnection {
  private readonly active = new Map<string, Job>();
  private alive = true;
  private readonly pinger: NodeJS.Timeout;
  private readonly rate: TokenBucket;
  private flooded = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly socket: WsSocket,
    private readonly ctx: ServerContext,
    private readonly validate: Validate,
    private readonly log: FastifyBaseLogger,
    /** `chat.create`: its schema and the chat templates (absent: chat is refused). */
    private readonly chat?: { validate: Validate; templates: ChatTemplates },
  ) {
    this.rate = new TokenBucket(ctx.limits.wsMaxMessagesPerSecond);
    socket.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    socket.on('pong', () => {
      this.alive = true;
    });
    socket.on('close', () => this.onClose());
    // Every open socket hears about swaps, whether or not it has a request in flight.
    this.unsubscribe = ctx.onSwap((swap) => {
      this.send({ type: 'model.swapped', ...swap }).catch(() => {});
    });
    this.pinger = setInterval(() => this.heartbeat(), ctx.limits.wsPingIntervalMs);
    this.pinger.unref();
  }

  private send(msg: object): Promise<void> {
    return sendWithBackpressure(this.socket, JSON.stringify(msg), this.ctx.limits.wsMaxBufferedBytes);
  }

  private sendError(id: string | undefined, err: unknown): void {
    const mapped = toApiError(err);
    if (mapped.internal) this.log.error({ err, id }, 'websocket request failed');
    const { message, code, param } = mapped.body.error;
    this.send({
      type: 'error',
      ...(id === undefined ? {} : { id }),
      message,
      code,
      ...(param ? { param } : {}),
      status: mapped.status,
    }).catch(
      () => {}, // the socket is gone; nobody to tell
    );
  }

  private onMessage(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (this.flooded) return;
    if (!this.rate.take()) {
      // A flood is not answered message by message: one error, then 1008 (policy violation).
      this.flooded = true;
      const limit = this.ctx.limits.wsMaxMessagesPerSecond;
      this.log.info({ limit }, 'websocket over its message rate; closing it');
      this.sendError(
        undefined,
        new ApiError('TF_ERR_RATE_LIMITED', `more than ${limit} messages per second on this socket`),
      );
      this.socket.close(1008, 'message rate limit exceeded');
      return;
    }
    try {
      const refused = this.dispatch(data, isBinary);
      if (refused) this.sendError(refused.id, refused.error);
    } catch (err) {
      // Thrown from a 'message' listener, it would be uncaught and end the process.
      this.sendError(undefined, err);
    }
  }

  /** Acts on one client message; returns what to refuse, if anything. */
  private dispatch(
    data: Buffer | ArrayBuffer | Buffer[],
    isBinary: boolean,
  ): { id?: string; error: ApiError } | undefined {
    const bad = (message: string, id?: string) => ({ id, error: new ApiError('TF_ERR_BAD_ARGS', message) });
    if (isBinary) return bad('send JSON text messages');
    let msg: unknown;
    try {
      const text = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      msg = JSON.parse(text.toString('utf8'));
    } catch {
      return bad('the message is not valid JSON');
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg))
      return bad('a message must be a JSON object');
    const m = msg as Record<string, unknown>;
    const rawId = m.id;
    const id =
      (typeof rawId === 'string' && rawId.length > 0 && rawId.length <= MAX_ID_LENGTH) ||
      (typeof rawId === 'number' && Number.isFinite(rawId))
        ? String(rawId)
        : undefined;
    switch (m.type) {
      case 'completion.create':
      case 'chat.create':
        if (id === undefined)
          return bad(`${m.type} needs an "id" (a string of 1 to ${MAX_ID_LENGTH} characters or a number)`);
        void this.create(id, m, m.type === 'chat.create' ? 'chat' : 'completion');
        return undefined;
      case 'completion.cancel':
      case 'chat.cancel': {
        const job = id === undefined ? undefined : this.active.get(id);
        if (!job)
          return {
            id,
            error: new ApiError('TF_ERR_NOT_FOUND', `no request ${quoted(rawId)} is in flight`),
          };
        job.abort(new ApiError('TF_ERR_CANCELLED', 'cancelled by the client'));
        return undefined;
      }
      case 'ping':
        this.send({ type: 'pong', ...(id === undefined ? {} : { id }) }).catch(() => {});
        return undefined;
      default:
        return bad(
          `unknown message type ${quoted(m.type)}; expected completion.create, chat.create or a cancel`,
          id,
        );
    }
  }

  private async create(id: string, msg: Record<string, unknown>, kind: 'completion' | 'chat'): Promise<void> {
    if (this.active.has(id)) {
      this.sendError(
        id,
        new ApiError('TF_ERR_BAD_ARGS', `request ${JSON.stringify(id)} is already in flight on this socket`),
      );
      return;
    }
    if (this.active.size >= this.ctx.limits.wsMaxConcurrent) {
      this.count(429);
      this.sendError(
        id,
        new ApiError(
          'TF_ERR_TOO_MANY_REQUESTS',
          `this socket already has ${this.active.size} requests in flight (the limit)`,
        ),
      );
      return;
    }
    let job: Job | undefined;
    let status = 200;
    const finishes: (FinishReason | null)[] = [];
    let completionTokens = 0;
    let promptTokens = 0;
    try {
      const chat = kind === 'chat' ? this.chat : undefined;
      if (kind === 'chat' && !chat)
        throw new ApiError('TF_ERR_BAD_ARGS', 'chat is not served on this socket');
      const problem = (chat?.validate ?? this.validate)(msg);
      if (problem) throw new ApiError('TF_ERR_BAD_ARGS', problem.message, problem.param);
      const body = msg as unknown as CompletionBody | ChatBody;
      const engine = this.ctx.acceptGeneration(body.model);
      const parse = { maxChoices: this.ctx.limits.maxChoices };
      const req = chat
        ? parseChatRequest(body as ChatBody, engine, parse, chat.templates)
        : parseCompletionRequest(body as CompletionBody, engine, parse);
      promptTokens = req.prompts.reduce((s, p) => s + p.ids.length, 0);
      finishes.push(...Array.from({ length: req.prompts.length * req.n }, () => null));
      job = this.ctx.startJob();
      this.active.set(id, job);
      for await (const e of runCompletion(engine, req, job, this.ctx.metrics)) {
        if (e.type === 'accepted') continue;
        if (e.type === 'text') {
          completionTokens += e.tokens;
          if (e.text === '' && !e.logprobs) continue;
          await this.send(
            chat
              ? {
                  type: 'chat.delta',
                  id,
                  index: e.index,
                  content: e.text,
                  ...(e.reported ? { logprobs: chatTokenLogprobs(engine.tokenizer, e.reported) } : {}),
                  ...producedBy(engine.name, e.model),
                }
              : {
                  type: 'completion.delta',
                  id,
                  index: e.index,
                  text: e.text,
                  ...(e.logprobs ? { logprobs: e.logprobs } : {}),
                  ...producedBy(engine.name, e.model),
                },
          );
        } else if (e.type === 'finish') finishes[e.index] = e.finishReason;
        else await this.send(this.done(kind, id, e.usage, finishes));
      }
    } catch (err) {
      const mapped = toApiError(err);
      status = mapped.status;
      if (mapped.code === 'TF_ERR_CANCELLED') {
        const partial = usage(promptTokens, completionTokens);
        await this.send(this.done(kind, id, partial, finishes, 'cancelled')).catch(() => {});
      } else if (mapped.code !== 'TF_ERR_CLIENT_CLOSED') this.sendError(id, err);
    } finally {
      if (job) {
        job.end();
        this.active.delete(id);
      }
      this.count(status);
    }
  }

  private done(
    kind: 'completion' | 'chat',
    id: string,
    u: ReturnType<typeof usage>,
    finishes: (FinishReason | null)[],
    override?: 'cancelled',
  ): object {
    return {
      type: `${kind}.done`,
      id,
      usage: u,
      finish_reason: finishes[0] ?? override ?? null,
      choices: finishes.map((f, index) => ({ index, finish_reason: f ?? override ?? null })),
    };
  }

  private count(status: number): void {
    this.ctx.metrics.requests.inc({ route: ROUTE, status: String(status), ...this.ctx.metrics.labels });
  }

  private heartbeat(): void {
    if (!this.alive) {
      this.log.info('websocket missed a pong; closing it');
      this.socket.terminate();
      return;
    }
    this.alive = false;
    this.socket.ping();
  }

  private onClose(): void {
    clearInterval(this.pinger);
    this.unsubscribe();
    for (const job of this.active.values())
      job.abort(new ApiError('TF_ERR_CLIENT_CLOSED', 'the WebSocket closed'));
  }
}
