/**
 * The image bytes of a Glance request body (`PUT …/file`, `PUT …/stage`): Glance's media-type and
 * length rules, the body idle timeout, and an abort when the client goes away mid-body. The bytes
 * go to `receive` (an upload or a stage: both the one ingest path), never buffered here.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { DomainError } from '../../domain/errors.js';
import { withBodyIdleTimeout } from '../http/body-idle-timeout.js';
import { header } from '../http/request-header.js';
import { GlanceError } from './error-table.js';

export type ReceiveBody = (body: AsyncIterable<Uint8Array>, opts: { announcedSize?: number; signal: AbortSignal }) => Promise<unknown>;

/** Streams the request body into `receive`, then answers 204 as Glance does. */
export async function receiveImageBody(req: FastifyRequest, reply: FastifyReply, bodyIdleTimeoutMs: number, receive: ReceiveBody): Promise<FastifyReply> {
  const type = header(req, 'content-type');
  if (type !== undefined && !/^\s*application\/octet-stream\s*(;|$)/i.test(type)) {
    throw new GlanceError(
      415,
      `The request media type ${type.slice(0, 100)} is not supported by this server; send the image data as application/octet-stream.`,
    );
  }
  const length = header(req, 'content-length');
  if (length !== undefined && !/^\d{1,16}$/.test(length)) throw new GlanceError(400, 'Content-Length must be a byte count.');
  const ac = new AbortController();
  const onClose = () => {
    if (!req.raw.complete) ac.abort(new Error('the client disconnected after sending part of the body'));
  };
  req.raw.on('close', onClose);
  try {
    const body = withBodyIdleTimeout(req.raw, bodyIdleTimeoutMs);
    await receive(body, { announcedSize: length === undefined ? undefined : Number(length), signal: ac.signal });
    return reply.code(204).send();
  } catch (e) {
    if (e instanceof DomainError && e.code === 'REQUEST_TIMEOUT') reply.raw.once('finish', () => req.raw.socket.destroy());
    throw e;
  } finally {
    req.raw.off('close', onClose);
  }
}
