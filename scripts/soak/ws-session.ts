import { openSocket, WS_OPEN, type WsClient } from '../harness/ws.ts';
import type { Plan } from './sse.ts';
import { type Finish, Stream, type Tally } from './streams.ts';

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

interface InFlight {
  s: Stream;
  p: Plan;
  cancelBy: 'message' | 'close';
  settle: () => void;
}

/**
 * One WebSocket (/v1/stream) of the soak, carrying one request at a time: its messages go to the
 * stream in flight, and the `model.swapped` events it gets are tallied.
 */
export class WsSession {
  private readonly inFlight = new Map<string, InFlight>();
  /** Ids we cancelled: the server may answer a cancel that raced the stream's end with NOT_FOUND. */
  private readonly cancelled = new Set<string>();
  private closing = false;
  private swapped = 0;
  private next = 0;
  private readonly openAt = performance.now();
  private readonly closed: Promise<void>;

  private constructor(
    private readonly ws: WsClient,
    private readonly tally: Tally,
    private readonly id: number,
  ) {
    tally.ws.opened++;
    ws.on('message', (d) => this.onMessage(d));
    ws.on('error', () => {}); // a 'close' follows
    this.closed = new Promise((r) => ws.on('close', (code) => r(this.onClose(code))));
  }

  static async open(url: string, tally: Tally, id: number): Promise<WsSession | undefined> {
    try {
      return new WsSession(await openSocket(`${url.replace(/^http/, 'ws')}/v1/stream`), tally, id);
    } catch (err) {
      tally.ws.openFailures++;
      tally.note(`ws open failed: ${message(err)}`);
      return undefined;
    }
  }

  get usable(): boolean {
    return !this.closing && this.ws.readyState === WS_OPEN;
  }

  run(p: Plan, cancelBy: 'message' | 'close'): Promise<Stream> {
    const id = `r${this.next++}`;
    const s = new Stream(this.tally, 'ws');
    return new Promise((resolve) => {
      const settle = () => {
        this.inFlight.delete(id);
        resolve(s);
      };
      this.inFlight.set(id, { s, p, cancelBy, settle });
      s.abort = () => this.ws.terminate();
      this.ws.send(JSON.stringify({ type: 'completion.create', id, ...p.body }), (err) => {
        if (!err) return;
        s.end('dropped', undefined, `send failed: ${err.message}`);
        settle();
      });
    });
  }

  private onMessage(data: Buffer): void {
    const at = performance.now();
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
    } catch {
      this.tally.ws.strays++;
      this.tally.note(`ws message that is not JSON: ${data.toString('utf8').slice(0, 200)}`);
      return;
    }
    if (m.type === 'model.swapped') {
      this.onSwapped(m, at);
      return;
    }
    if (m.type === 'pong') return;
    const id = typeof m.id === 'string' ? m.id : undefined;
    const f = id === undefined ? undefined : this.inFlight.get(id);
    if (!f) {
      // After a cancel, what was already on its way still arrives (and a cancel that raced the
      // stream's end is answered NOT_FOUND).
      if (id !== undefined && this.cancelled.has(id)) return;
      this.tally.ws.strays++;
      this.tally.note(`ws message for no stream in flight: ${JSON.stringify(m).slice(0, 300)}`);
      return;
    }
    const { s } = f;
    s.lastActivity = at;
    if (m.type === 'completion.delta') {
      if (typeof m.text === 'string' && m.text !== '') s.delta(at);
      if (m.model !== f.p.body.model)
        this.tally.note(
          `a delta names model ${JSON.stringify(m.model)}, not ${JSON.stringify(f.p.body.model)}`,
        );
      s.version(m.model, m.system_fingerprint);
      this.maybeCancel(id!, f);
    } else if (m.type === 'completion.done') {
      const finish = m.finish_reason;
      if (finish === 'stop' || finish === 'length') s.end('completed', finish as Finish);
      else if (finish === 'cancelled' && s.cancelRequested) s.end('completed', 'cancelled');
      else
        s.end(
          'error',
          undefined,
          `completion.done with finish_reason ${JSON.stringify(finish)}${s.cancelRequested ? '' : ' (we did not cancel it)'}`,
        );
      f.settle();
    } else if (m.type === 'error') {
      const refused = m.status === 429 && m.code === 'TF_ERR_QUEUE_FULL';
      s.end(refused ? 'refused' : 'error', undefined, `${String(m.code)}: ${String(m.message)}`);
      f.settle();
    } else {
      this.tally.ws.strays++;
      this.tally.note(`ws message of unknown type: ${JSON.stringify(m).slice(0, 300)}`);
    }
  }

  private onSwapped(m: Record<string, unknown>, at: number): void {
    this.swapped++;
    const side = (v: unknown) => {
      const o = v as { name?: unknown; version?: unknown } | null;
      return typeof o?.name === 'string' && typeof o.version === 'string' ? `${o.name}@${o.version}` : null;
    };
    const from = side(m.from);
    const to = side(m.to);
    const policy = typeof m.policy === 'string' ? m.policy : null;
    const migrated = typeof m.migrated === 'number' ? m.migrated : null;
    this.tally.ws.swapped.push({
      at,
      socket: this.id,
      from,
      to,
      policy,
      migrated,
      wellFormed:
        from !== null && to !== null && (policy === 'drain' || policy === 'migrate') && migrated !== null,
    });
  }

  private maybeCancel(id: string, f: InFlight): void {
    const { s, p } = f;
    if (p.cancelAfter === undefined || s.cancelRequested || s.ended || s.count < p.cancelAfter) return;
    s.cancelRequested = true;
    this.tally.cancelsSent++;
    this.cancelled.add(id);
    if (f.cancelBy === 'message') {
      this.ws.send(JSON.stringify({ type: 'completion.cancel', id }));
      return; // completion.done with finish_reason "cancelled" (or stop/length if it won the race) ends it
    }
    s.end('completed', 'cancelled');
    f.settle();
    this.closing = true;
    this.ws.close(1000, 'cancel');
  }

  private onClose(code: number): void {
    this.tally.ws.lives.push({ openAt: this.openAt, closeAt: performance.now(), swapped: this.swapped });
    if (!this.closing) this.tally.ws.closedByServer++;
    for (const f of [...this.inFlight.values()]) {
      f.s.end('dropped', undefined, `the socket closed (${code}) after ${f.s.count} deltas`);
      f.settle();
    }
  }

  /** Closes normally; terminates a socket that does not close within 5 s. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.ws.readyState === WS_OPEN) this.ws.close(1000, 'done');
    const t = setTimeout(() => this.ws.terminate(), 5_000);
    await this.closed;
    clearTimeout(t);
  }
}
