import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

/**
 * Readers for the deployment files: Dockerfile instructions, .dockerignore matching (Docker's
 * rules), YAML documents and the JSON patches of a kustomize overlay. Only what the deployment
 * files use; anything else is refused, so a new construct fails the tests instead of passing
 * unchecked.
 */

export interface Instruction {
  op: string;
  args: string;
  line: number;
}

export interface Stage {
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

/** Stages of a Dockerfile, `${ARG}` defaults declared before the first FROM substituted into FROM. */
export function parseDockerfile(text: string): Stage[] {
  const instructions: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && !pending)) return; // comments may sit inside continuations
    const body = line.endsWith('\\') ? line.slice(0, -1) : line;
    pending = pending ? { text: `${pending.text} ${body}`, line: pending.line } : { text: body, line: i + 1 };
    if (line.endsWith('\\')) return;
    const m = /^(\S+)\s*([\s\S]*)$/.exec(pending.text.trim());
    if (m) instructions.push({ op: m[1]!.toUpperCase(), args: m[2]!.trim(), line: pending.line });
    pending = undefined;
  });
  const globals = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      const image = m[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a?: string, b?: string) => {
        const name = (a ?? b)!;
        const v = globals.get(name);
        if (v === undefined) throw new Error(`line ${ins.line}: ARG ${name} has no default`);
        return v;
      });
      stages.push({ image, name: m[2], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.op !== 'ARG') throw new Error(`line ${ins.line}: ${ins.op} before the first FROM`);
      const [name, value] = ins.args.split('=', 2);
      if (value !== undefined) globals.set(name!, value);
    } else stages.at(-1)!.instructions.push(ins);
  }
  return stages;
}

export const instructionsOf = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);

/** `ENV A=1 B="x y"` pairs of a stage, later ones winning. */
export function envOf(stage: Stage): Map<string, string> {
  const env = new Map<string, string>();
  for (const ins of instructionsOf(stage, 'ENV')) {
    if (!ins.args.includes('=')) throw new Error(`line ${ins.line}: use ENV KEY=VALUE`);
    for (const m of ins.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env.set(m[1]!, m[2]!.replace(/^"|"$/g, ''));
  }
  return env;
}

/** The exec (JSON array) form of ENTRYPOINT/CMD/HEALTHCHECK CMD, or undefined for the shell form. */
export function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  const v: unknown = JSON.parse(args);
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw new Error(`not a string array: ${args}`);
  return v;
}

/** `COPY [--from=X] [--chown=Y] SRC... DEST` → its flags and sources. */
export function copyOf(ins: Instruction): { from: string | undefined; sources: string[] } {
  const words = ins.args.split(/\s+/);
  let from: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
  }
  if (words.length < 2 || words[0]!.startsWith('[')) throw new Error(`line ${ins.line}: cannot read COPY`);
  return { from, sources: words.slice(0, -1) };
}

/**
 * Docker's .dockerignore rules: `*` and `?` within a path segment, `**` across segments, `!`
 * re-includes, the last matching line wins, and a pattern that matches a directory matches
 * everything under it.
 */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      const segs = pattern.split('/');
      const re = segs
        .map((seg, i) => {
          if (seg === '**') return i === segs.length - 1 ? '.*' : '(?:.*/)?';
          const s = seg
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '[^/]*')
            .replace(/\?/g, '[^/]');
          return i === segs.length - 1 ? s : `${s}/`;
        })
        .join('');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path) => {
    const parts = path.replace(/^\.?\/+/, '').split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let ignored = false;
    for (const r of rules) if (prefixes.some((p) => r.re.test(p))) ignored = !r.negate;
    return ignored;
  };
}

export type Yaml = Record<string, unknown>;

/** Every document of a YAML file, each a mapping; a syntax error or a scalar document throws. */
export function readYaml(path: string): Yaml[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  return docs
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0]!.message}`);
      return d.toJS() as unknown;
    })
    .filter((v) => v !== null)
    .map((v) => {
      if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${path}: a document is not a mapping`);
      return v as Yaml;
    });
}

export interface PatchOp {
  op: string;
  path: string;
  value?: unknown;
}

/** RFC 6902 add/remove/replace, failing as kustomize does when a path does not exist. */
export function applyJsonPatch<T>(doc: T, ops: readonly PatchOp[]): T {
  const out = structuredClone(doc);
  for (const { op, path, value } of ops) {
    const keys = path
      .split('/')
      .slice(1)
      .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = keys.pop();
    if (last === undefined) throw new Error(`patch path ${path} names the document`);
    let parent: unknown = out;
    for (const k of keys) {
      parent = (parent as Record<string, unknown> | undefined)?.[k];
      if (parent === undefined || parent === null || typeof parent !== 'object')
        throw new Error(`patch path ${path}: ${k} does not exist`);
    }
    const node = parent as Record<string, unknown>;
    if (op !== 'add' && !(last in node)) throw new Error(`patch path ${path} does not exist`);
    if (op === 'remove') {
      if (Array.isArray(node)) node.splice(Number(last), 1);
      else delete node[last];
    } else if (op === 'replace' || op === 'add') {
      if (Array.isArray(node) && op === 'add')
        node.splice(last === '-' ? node.length : Number(last), 0, value);
      else node[last] = value;
    } else throw new Error(`patch op ${op} is not supported here`);
  }
  return out;
}
