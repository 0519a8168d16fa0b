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
 * the text was cut into deltas. Matching is on code points, so a stop string holding a lone
 * surrogate (JSON allows one) never matches half of a character, and text is only ever cut or
 * held between whole characters.
 */
export interface StopResult {
  /** Text that is safe to show now. */
  emit: string;
  /** A stop string completed; nothing more will be emitted. */
  stopped: boolean;
  /** The stop string that matched, when stopped (vLLM's stop_reason). */
  matched?: string;
}

interface Pattern {
  text: string;
  /** The stop string's code points. */
  cps: Int32Array;
  /** KMP prefix function on code points: pi[q] = longest proper border of cps[0..q]. */
  pi: Int32Array;
  /** units[q]: UTF-16 length of the first q code points (what the held text measures). */
  units: Int32Array;
}

const HIGH_SURROGATE = /[\uD800-\uDBFF]$/;

export class StopMatcher {
  private readonly stops: readonly Pattern[];
  /** Per stop string: how many of its leading code points the text currently ends with. */
  private readonly state: Int32Array;
  private held = '';
  /** A high surrogate that ended the last delta: its pair may start the next one. */
  private split = '';
  private stopped = false;

  constructor(stops: readonly string[]) {
    for (const s of stops) {
      if (typeof s !== 'string' || s === '')
        fail('TF_ERR_BAD_ARGS', 'stop strings must be non-empty strings');
    }
    this.stops = stops.map(pattern);
    this.state = new Int32Array(this.stops.length);
  }

  /**
   * Feeds the next piece of generated text. After a stop, returns nothing more. While not
   * `armed` (min_tokens not reached), a completed stop string does not stop the text.
   */
  push(delta: string, armed = true): StopResult {
    if (this.stopped) return { emit: '', stopped: true };
    if (this.stops.length === 0) return { emit: delta, stopped: false };
    let input = this.split + delta;
    this.split = '';
    if (HIGH_SURROGATE.test(input)) {
      this.split = input.slice(-1);
      input = input.slice(0, -1);
    }
    const text = this.held + input;
    let end = this.held.length; // code-unit offset in text after the current code point
    for (const ch of input) {
      const c = ch.codePointAt(0)!;
      end += ch.length;
      let hit = -1;
      for (let k = 0; k < this.stops.length; k++) {
        const { cps, pi } = this.stops[k]!;
        let q = this.state[k]!;
        while (q > 0 && cps[q] !== c) q = pi[q - 1]!;
        if (cps[q] === c) q++;
        this.state[k] = q;
        if (
          armed &&
          q === cps.length &&
          (hit < 0 || this.stops[k]!.text.length > this.stops[hit]!.text.length)
        )
          hit = k;
      }
      if (hit >= 0) {
        const matched = this.stops[hit]!.text;
        this.stopped = true;
        this.held = '';
        this.split = '';
        return { emit: text.slice(0, end - matched.length), stopped: true, matched };
      }
    }
    let keep = 0;
    for (let k = 0; k < this.stops.length; k++) {
      const units = this.stops[k]!.units[this.state[k]!]!;
      if (units > keep) keep = units;
    }
    this.held = text.slice(text.length - keep);
    return { emit: text.slice(0, text.length - keep), stopped: false };
  }

  /** At the end of generation: the held-back text, which turned out not to be a stop string. */
  flush(): string {
    const h = this.held + this.split;
    this.held = '';
    this.split = '';
    this.state.fill(0);
    return h;
  }
}

function pattern(text: string): Pattern {
  const cps = new Int32Array(text.length);
  const units = new Int32Array(text.length + 1);
  let n = 0;
  for (let i = 0; i < text.length; n++) {
    const c = text.codePointAt(i)!;
    cps[n] = c;
    i += c > 0xffff ? 2 : 1;
    units[n + 1] = i;
  }
  const pi = new Int32Array(n);
  for (let i = 1, q = 0; i < n; i++) {
    while (q > 0 && cps[i] !== cps[q]) q = pi[q - 1]!;
    if (cps[i] === cps[q]) q++;
    pi[i] = q;
  }
  return { text, cps: cps.subarray(0, n), pi, units: units.subarray(0, n + 1) };
}
