import { Spans } from './stats.ts';

/**
 * What every soak stream is counted as, and the tally they are counted in. A stream ends exactly
 * once: `completed` (finish_reason stop or length, or cancelled after we cancelled it), `dropped`
 * (the connection ended without a finish we did not cause), `error` (an error status or event),
 * `refused` (429 queue full, counted apart) or `hung` (no event for the stall limit).
 */

export type Transport = 'sse' | 'ws';
export type Outcome = 'completed' | 'dropped' | 'error' | 'refused' | 'hung';
export type Finish = 'stop' | 'length' | 'cancelled';

export type OutcomeCounts = { started: number } & Record<Outcome, number>;

const zero = (): OutcomeCounts => ({ started: 0, completed: 0, dropped: 0, error: 0, refused: 0, hung: 0 });

/** A `model.swapped` event as a WebSocket received it. */
export interface SwappedEvent {
  at: number;
  socket: number;
  from: string | null;
  to: string | null;
  policy: string | null;
  migrated: number | null;
  wellFormed: boolean;
}

/** One WebSocket's life, to tell which swaps it saw through (performance.now() ms). */
export interface SocketLife {
  openAt: number;
  closeAt: number;
  swapped: number;
}

export class Tally {
  readonly transports: Record<Transport, OutcomeCounts> = { sse: zero(), ws: zero() };
  readonly finish: Record<Finish, number> = { stop: 0, length: 0, cancelled: 0 };
  cancelsPlanned = 0;
  cancelsSent = 0;
  /** Completed streams by how many distinct model versions their chunks named. */
  readonly versionsPerStream = new Map<number, number>();
  readonly versionsSeen = new Set<string>();
  readonly ttft = new Spans();
  readonly itl = new Spans();
  /** The first problems, verbatim, for the report. */
  readonly problems: string[] = [];
  /** Exceptions in the soak's own client code (a soak bug, reported as a failure). */
  clientExceptions = 0;
  readonly active = new Set<Stream>();
  readonly ws = {
    opened: 0,
    openFailures: 0,
    /** Sockets the server closed, with or without a stream open. */
    closedByServer: 0,
    /** Messages for no stream in flight (other than the late answer to a racing cancel). */
    strays: 0,
    swapped: [] as SwappedEvent[],
    lives: [] as SocketLife[],
  };

  note(problem: string): void {
    if (this.problems.length < 40) this.problems.push(problem.slice(0, 600));
  }

  total(outcome: Outcome | 'started'): number {
    return this.transports.sse[outcome] + this.transports.ws[outcome];
  }
}

export class Stream {
  private deltas = 0;
  private last: number;
  lastActivity: number;
  outcome: Outcome | undefined;
  cancelRequested = false;
  private readonly versions = new Set<string>();
  /** Ends the transport's connection or request (set by the transport). */
  abort: () => void = () => {};

  constructor(
    private readonly tally: Tally,
    readonly transport: Transport,
    readonly sentAt = performance.now(),
  ) {
    tally.transports[transport].started++;
    tally.active.add(this);
    this.last = sentAt;
    this.lastActivity = sentAt;
  }

  get count(): number {
    return this.deltas;
  }

  /** A text delta arrived: the first gives TTFT, the others inter-token gaps. */
  delta(at = performance.now()): void {
    if (this.ended) return;
    if (this.deltas === 0) this.tally.ttft.add(this.sentAt, at);
    else this.tally.itl.add(this.last, at);
    this.deltas++;
    this.last = at;
    this.lastActivity = at;
  }

  /** The model and version a chunk names (when the server sends them). */
  version(model: unknown, fingerprint: unknown): void {
    if (typeof model !== 'string') return;
    const v = `${model}@${typeof fingerprint === 'string' ? fingerprint : '?'}`;
    this.versions.add(v);
    this.tally.versionsSeen.add(v);
  }

  get ended(): boolean {
    return this.outcome !== undefined;
  }

  end(outcome: Outcome, finish?: Finish, detail?: string): void {
    if (this.outcome !== undefined) return;
    this.outcome = outcome;
    this.tally.active.delete(this);
    this.tally.transports[this.transport][outcome]++;
    if (outcome === 'completed' && finish) this.tally.finish[finish]++;
    if (outcome === 'completed' && this.versions.size > 0) {
      const n = this.versions.size;
      this.tally.versionsPerStream.set(n, (this.tally.versionsPerStream.get(n) ?? 0) + 1);
    }
    if (outcome !== 'completed') this.tally.note(`${this.transport} ${outcome}: ${detail ?? ''}`);
  }
}
