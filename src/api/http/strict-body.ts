/**
 * JSON bodies are taken as sent: `{"name": 5}` is refused, not turned into "5". Ajv coerces
 * scalar types for every part of a request when `coerceTypes` is on, and querystrings need it
 * (`?limit=10`, a single `?state=ready` as an array); so body types are checked here, before
 * validation, against the `type` the route's body schema declares for each field.
 */
import { invalid } from '../../domain/errors.js';

interface Schema {
  type?: string | readonly string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  description?: string;
}

const WORDS: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'a whole number',
  boolean: 'true or false',
  null: 'null',
  object: 'a JSON object',
  array: 'an array',
};

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function matches(v: unknown, type: string): boolean {
  const t = jsonType(v);
  if (type === 'integer') return t === 'number' && Number.isInteger(v);
  return t === type;
}

/** Throws INVALID_REQUEST naming the first field whose JSON type is not what the schema declares. */
export function assertBodyTypes(schema: Schema, value: unknown, path = ''): void {
  if (schema.type !== undefined) {
    const types = typeof schema.type === 'string' ? [schema.type] : schema.type;
    if (!types.some((t) => matches(value, t))) {
      const what = path === '' ? 'the request body' : `field "${path}"`;
      throw invalid(
        `${what} must be ${types.map((t) => WORDS[t] ?? t).join(' or ')}, not ${WORDS[jsonType(value)] ?? jsonType(value)}`,
        path === '' ? {} : { field: path },
      );
    }
  }
  if (schema.properties && jsonType(value) === 'object') {
    for (const [k, sub] of Object.entries(schema.properties)) {
      const v = (value as Record<string, unknown>)[k];
      if (v !== undefined) assertBodyTypes(sub, v, path === '' ? k : `${path}.${k}`);
    }
  }
  if (schema.items && Array.isArray(value)) value.forEach((v, i) => assertBodyTypes(schema.items!, v, `${path}[${i}]`));
}
