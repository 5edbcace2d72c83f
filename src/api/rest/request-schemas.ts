/**
 * Request schemas the REST routes share, written with TypeBox so that handlers get typed
 * `req.params` / `req.query` / `req.body`. Each produces the same JSON Schema the routes declared
 * by hand before (Ajv's messages and the OpenAPI document depend on it): a string enum is
 * `{type: 'string', enum}`, a nullable field `{type: [T, 'null']}`.
 */
import { Type } from 'typebox';

/** `{type: 'string', enum: values}`, typed as the union of the values. */
export function stringEnum<const T extends readonly string[]>(values: T, options: { description?: string } = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** `{type: 'string' | 'null'}` (with `maxLength` etc.), typed as string | null. */
export function nullableString(options: { maxLength?: number; description?: string } = {}) {
  return Type.Unsafe<string | null>({ type: ['string', 'null'], ...options });
}

/** `{type: 'integer' | 'null'}`, typed as number | null. */
export function nullableInteger(options: { minimum?: number } = {}) {
  return Type.Unsafe<number | null>({ type: ['integer', 'null'], ...options });
}

/** An array of strings (a query parameter that may repeat or be comma-separated). */
export function stringList(description: string) {
  return Type.Array(Type.String(), { description });
}

/** `:id` of an image (or token, rule: same shape). */
export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
