/** Prometheus text → value by series (`name` or `name{labels}` exactly as printed). */
export type Metrics = Map<string, number>;

export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/**
 * The sum of every series of `query`'s metric name whose labels include `query`'s
 * (`name` or `name{a="x",…}`): gauges per loaded model version add up, counters labelled by
 * model_name are found without naming every label. Null when no series matches.
 */
export function metricSum(m: Metrics, query: string): number | null {
  const brace = query.indexOf('{');
  const name = brace < 0 ? query : query.slice(0, brace);
  const want = brace < 0 ? [] : labelPairs(query.slice(brace + 1, -1));
  let sum: number | null = null;
  for (const [series, v] of m) {
    const b = series.indexOf('{');
    if ((b < 0 ? series : series.slice(0, b)) !== name) continue;
    const have = b < 0 ? [] : labelPairs(series.slice(b + 1, -1));
    if (want.every((p) => have.includes(p))) sum = (sum ?? 0) + v;
  }
  return sum;
}

/** `a="x",b="y"` → ['a="x"', 'b="y"'] (values never hold `",` in our metrics). */
function labelPairs(s: string): string[] {
  return s === '' ? [] : s.split(/(?<="),/);
}
