/**
 * Turns JSON-schema (ajv) errors into one readable message. An `anyOf` mismatch reports the
 * field once with its allowed forms, instead of one line per alternative that did not match.
 */

export interface SchemaError {
  keyword?: string;
  instancePath?: string;
  message?: string;
  params?: { missingProperty?: string };
}

const FORMS: Record<string, string> = {
  prompt: 'a string, an array of strings, an array of token ids or an array of token-id arrays',
  stop: 'a string or an array of strings',
};

export function formatSchemaErrors(errors: readonly SchemaError[], dataVar: string): string {
  const unions = errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath ?? '');
  const parts: string[] = [];
  for (const e of errors) {
    const path = e.instancePath ?? '';
    const where = `${dataVar}${path}`;
    if (e.keyword === 'anyOf') {
      const field = path.split('/').pop() ?? '';
      parts.push(`${where} must be ${FORMS[field] ?? 'one of the allowed forms'}`);
    } else if (!unions.some((u) => path === u || path.startsWith(`${u}/`)))
      parts.push(`${where} ${e.message}`);
  }
  return [...new Set(parts)].join(', ') || `${dataVar} is not valid`;
}

/** The top-level field the first error is about (OpenAI's `param`), if any. */
export function schemaErrorParam(errors: readonly SchemaError[]): string | undefined {
  const e = errors[0];
  if (!e) return undefined;
  const top = (e.instancePath ?? '').split('/')[1];
  return top || e.params?.missingProperty || undefined;
}
