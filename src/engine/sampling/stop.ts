import { fail } from '../../util/errors.ts';

/**
 * The stopping-criteria stage for stop strings, on generated text as the detokenizer streams it
 * (a stop string can span any number of deltas). Text that could still be the start of a stop
 * string is held back; a completed stop string is cut off, like OpenAI, together with
 * everything after it.
 *
 * Each stop string carries a KMP automaton whose state is the length of the longest suffix of
 * the text so far that is a prefix of it, so push() costs O(delta · stops) however long the stop
 * strings are, and the held text is exactly the longest such suffix. When several stop strings
 * could match, the one that completes first in the text wins (on a tie, the one starting
 * earlier); that is what a char-by-char stream would see, so the result does not depend on how
 * the text was cut into deltas. Matching is on UTF-16 code units, which is exact for well-formed
 * strings: a code unit match of whole strings is a code point match.
 */
export interface StopResult {
  /** Text that is safe to show now. */
  emit: string;
  /** A stop string completed; nothing more will be emitted. */
  stopped: boolean;
  /** The stop string that matched, when stopped (vLLM's stop_reason). */
  matched?: string;
}

export class StopMatcher {
  private readonly stops: readonly string[];
  /** KMP prefix function per stop string: pi[q] = longest proper border of s[0..q]. */
  private readonly pis: Int32Array[];
  /** Per stop string: how many of its leading code units the text currently ends with. */
  private readonly state: Int32Array;
  private held = '';
  private stopped = false;

  constructor(stops: readonly string[]) {
    for (const s of stops) {
      if (typeof s !== 'string' || s === '')
        fail('TF_ERR_BAD_ARGS', 'stop strings must be non-empty strings');
    }
    this.stops = [...stops];
    this.pis = this.stops.map(prefixFunction);
    this.state = new Int32Array(this.stops.length);
  }

  /** Feeds the next piece of generated text. After a stop, returns nothing more. */
  push(delta: string): StopResult {
    if (this.stopped) return { emit: '', stopped: true };
    if (this.stops.length === 0) return { emit: delta, stopped: false };
    const text = this.held + delta;
    const base = this.held.length;
    for (let i = 0; i < delta.length; i++) {
      const c = delta.charCodeAt(i);
      let hit = -1;
      for (let k = 0; k < this.stops.length; k++) {
        const s = this.stops[k]!;
        const pi = this.pis[k]!;
        let q = this.state[k]!;
        while (q > 0 && s.charCodeAt(q) !== c) q = pi[q - 1]!;
        if (s.charCodeAt(q) === c) q++;
        this.state[k] = q;
        if (q === s.length && (hit < 0 || s.length > this.stops[hit]!.length)) hit = k;
      }
      if (hit >= 0) {
        const matched = this.stops[hit]!;
        const start = base + i + 1 - matched.length;
        this.stopped = true;
        this.held = '';
        return { emit: text.slice(0, start), stopped: true, matched };
      }
    }
    let keep = 0;
    for (const q of this.state) if (q > keep) keep = q;
    this.held = text.slice(text.length - keep);
    return { emit: text.slice(0, text.length - keep), stopped: false };
  }

  /** At the end of generation: the held-back text, which turned out not to be a stop string. */
  flush(): string {
    const h = this.held;
    this.held = '';
    this.state.fill(0);
    return h;
  }
}

function prefixFunction(s: string): Int32Array {
  const pi = new Int32Array(s.length);
  for (let i = 1, q = 0; i < s.length; i++) {
    while (q > 0 && s.charCodeAt(i) !== s.charCodeAt(q)) q = pi[q - 1]!;
    if (s.charCodeAt(i) === s.charCodeAt(q)) q++;
    pi[i] = q;
  }
  return pi;
}
