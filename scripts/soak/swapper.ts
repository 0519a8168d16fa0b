import { fail } from '../../src/util/errors.ts';
import { type AdminAnswer, type ServerProcess, sleep } from '../harness/server.ts';

/**
 * The swaps of a soak: from → to → from … at a fixed period, the policy cycling migrate, migrate,
 * drain, drain so both directions run under both policies; one swap to the corrupt model (422,
 * nothing changes) in the third slot; and, once, the same swap sent twice at the same moment: the
 * one that arrives second finds the first running (409).
 */

export type SwapKind = 'swap' | 'corrupt';

export interface PlannedSwap {
  kind: SwapKind;
  target: string;
  policy: 'migrate' | 'drain';
}

export interface SwapRecord extends PlannedSwap {
  /** performance.now() ms when the request was sent and when its answer arrived. */
  sentAt: number;
  answeredAt: number;
  status: number;
  wallMs: number;
  durationMs: number | null;
  from: string | null;
  to: string | null;
  migrated: number | null;
  draining: number | null;
  error: string | null;
  /** Corrupt swap: the active model (name@version) before and after, which must be equal. */
  activeBefore?: string;
  activeAfter?: string;
}

export interface ConcurrentCheck {
  status: number;
  code: string | null;
  /**
   * The answer of the pair's loser: 409 is what a swap gets while another runs; 200 means the
   * first had finished before the second arrived.
   */
  verdict: 'refused-409' | 'inconclusive' | 'unexpected';
}

/**
 * Swap slots in [warmupS, durationS − tailS], every `everyS`; the corrupt one in the third slot.
 * At least three slots (two swaps and the corrupt one) are required.
 */
export function planSwaps(
  names: { from: string; to: string; corrupt: string },
  o: { durationS: number; warmupS: number; tailS: number; everyS: number },
): { atS: number; swap: PlannedSwap }[] {
  const slots: number[] = [];
  for (let t = o.warmupS; t <= o.durationS - o.tailS + 1e-9; t += o.everyS) slots.push(t);
  if (slots.length < 3)
    fail(
      'TF_ERR_BAD_ARGS',
      `${slots.length} swap slot(s) from ${+o.warmupS.toFixed(1)} s to ${+(o.durationS - o.tailS).toFixed(1)} s ` +
        `every ${o.everyS} s: ` +
        'at least 3 are needed (two swaps and the corrupt one); lengthen --duration-s or shorten --swap-every-s',
    );
  const corruptSlot = 2;
  const policies = ['migrate', 'migrate', 'drain', 'drain'] as const;
  let n = 0;
  return slots.map((atS, i) => {
    if (i === corruptSlot)
      return { atS, swap: { kind: 'corrupt', target: names.corrupt, policy: 'migrate' } as const };
    const swap: PlannedSwap = {
      kind: 'swap',
      target: n % 2 === 0 ? names.to : names.from,
      policy: policies[n % policies.length]!,
    };
    n++;
    return { atS, swap };
  });
}

const side = (v: unknown) => {
  const o = v as { name?: unknown; version?: unknown } | undefined;
  return typeof o?.name === 'string' ? `${o.name}@${String(o.version)}` : null;
};

const num = (v: unknown) => (typeof v === 'number' ? v : null);

async function active(server: ServerProcess): Promise<string> {
  const r = await server.admin('/admin/models');
  return side((r.body as { active?: unknown }).active) ?? `(GET /admin/models answered ${r.status})`;
}

function record(swap: PlannedSwap, sentAt: number, answer: AdminAnswer | Error): SwapRecord {
  const answeredAt = performance.now();
  const base = { ...swap, sentAt, answeredAt, wallMs: answeredAt - sentAt };
  if (answer instanceof Error)
    return {
      ...base,
      status: 0,
      durationMs: null,
      from: null,
      to: null,
      migrated: null,
      draining: null,
      error: answer.message,
    };
  const b = answer.body;
  const err = b.error as { code?: unknown; message?: unknown } | undefined;
  return {
    ...base,
    status: answer.status,
    durationMs: num(b.durationMs),
    from: side(b.from),
    to: side(b.to),
    migrated: num(b.migrated),
    draining: num(b.draining),
    error: err ? `${String(err.code)}: ${String(err.message)}` : null,
  };
}

/** Runs the plan against the clock starting at `t0` (performance.now() ms); stops early when `stop()`. */
export async function runSwaps(
  server: ServerProcess,
  plan: { atS: number; swap: PlannedSwap }[],
  t0: number,
  log: (m: string) => void,
  stop: () => boolean,
): Promise<{ swaps: SwapRecord[]; concurrent: ConcurrentCheck | null }> {
  const swaps: SwapRecord[] = [];
  let concurrent: ConcurrentCheck | null = null;
  for (const { atS, swap } of plan) {
    const wait = t0 + atS * 1000 - performance.now();
    if (wait > 0) await sleep(wait);
    if (stop()) break;
    const before = swap.kind === 'corrupt' ? await active(server) : undefined;
    const sentAt = performance.now();
    const send = () =>
      server
        .admin('/admin/swap', { model: swap.target, policy: swap.policy })
        .catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    // Once, on the first drain swap: two at once, so whichever arrives second finds one running.
    const twice: boolean = concurrent === null && swap.kind === 'swap' && swap.policy === 'drain';
    const answers: (AdminAnswer | Error)[] = await Promise.all(twice ? [send(), send()] : [send()]);
    // The plan's swap is the one that ran (both ask for the same model and policy).
    const ran = answers.findIndex((a) => !(a instanceof Error) && a.status === 200);
    const r = record(swap, sentAt, answers[Math.max(ran, 0)]!);
    if (swap.kind === 'corrupt') {
      r.activeBefore = before;
      r.activeAfter = await active(server);
    }
    swaps.push(r);
    if (twice) {
      const a: AdminAnswer | Error = answers[ran === 0 ? 1 : 0]!;
      const status = a instanceof Error ? 0 : a.status;
      const code =
        a instanceof Error ? null : String((a.body.error as { code?: unknown } | undefined)?.code ?? '');
      concurrent = {
        status,
        code: code || null,
        verdict:
          ran >= 0 && status === 409 && code === 'TF_ERR_SWAP_IN_PROGRESS'
            ? 'refused-409'
            : status === 200
              ? 'inconclusive'
              : 'unexpected',
      };
    }
    log(
      `swap ${swaps.length}/${plan.length} → ${swap.target} (${swap.policy}): ${r.status}` +
        (r.durationMs === null ? '' : ` in ${r.durationMs.toFixed(0)} ms`) +
        (r.migrated ? `, ${r.migrated} migrated` : '') +
        (r.draining ? `, ${r.draining} draining` : '') +
        (r.error ? ` — ${r.error.slice(0, 200)}` : ''),
    );
  }
  return { swaps, concurrent };
}
