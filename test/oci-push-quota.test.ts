/**
 * OCI pushes and the project's stored-bytes quota, and a manifest PUT that fails after its VM
 * image was made (issue 10), over real HTTP against a real server on SQLite and PostgreSQL:
 * - two concurrent pushes racing for the last free bytes: one passes, the other is DENIED (the
 *   check is made under the project lock the REST ingest takes), for monolithic and chunked pushes;
 * - an oras push of a disk counts its bytes once (the layer blob is the image's blob), and a blob
 *   linked to two repositories of the project counts once;
 * - a manifest PUT whose recording fails after the hook made the image (a database trigger forces
 *   it) leaves no new image and keeps the tag's earlier image and manifest.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import SqliteDatabase from 'better-sqlite3';
import pg from 'pg';
import { OCI_EMPTY, OCI_MANIFEST, OciClient, sha256 } from './support/oci-client.js';
import { patternedRaw, qemuConvert } from './support/qemu.js';
import { apiRequest, startTestServer, type Dialect, type TestServer } from './support/server.js';

const TITLE = 'org.opencontainers.image.title';
const MIB = 1024 * 1024;

/** Distinct bytes that do not compress to nothing (each call differs by `seed`). */
function bytesOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE((i * 2654435761 + seed * 40503) >>> 0, i);
  return b;
}

/** SQL run on the server's own database through a second connection (a trigger that forces a failure). */
async function onDatabase(s: TestServer, statements: { sqlite: string; postgres: string }): Promise<void> {
  const url = s.config.databaseUrl;
  if (/^postgres/.test(url)) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(statements.postgres);
    } finally {
      await c.end();
    }
    return;
  }
  const db = new SqliteDatabase(url.replace(/^sqlite:/, ''));
  try {
    db.exec(statements.sqlite);
  } finally {
    db.close();
  }
}

for (const dialect of ['sqlite', 'postgres'] as Dialect[]) {
  describe(`OCI pushes, quota and failed PUTs (${dialect})`, () => {
    let s: TestServer;
    let pusher: OciClient;

    before(async () => {
      s = await startTestServer({ dialect });
      for (const p of ['race', 'once', 'fail']) assert.equal((await apiRequest(s, 'POST', '/api/v1/projects', { name: p })).status, 201);
      pusher = new OciClient(s.url, s.token);
    });
    after(async () => {
      await s?.stop();
    });

    const usage = async (project: string) => {
      const r = await apiRequest(s, 'GET', `/api/v1/projects/${project}/quota`);
      assert.equal(r.status, 200, r.text);
      return r.json!.usage as { storedBytes: number; stagingBytes: number };
    };
    const setQuota = async (project: string, storedBytes: number) =>
      assert.equal((await apiRequest(s, 'PUT', `/api/v1/projects/${project}/quota`, { storedBytes })).status, 200);
    const imagesOf = async (reference: string) => {
      const r = await apiRequest(s, 'GET', `/api/v1/images?property=${encodeURIComponent(`imago.oci.reference=${reference}`)}&limit=100`);
      assert.equal(r.status, 200, r.text);
      return (r.json!.images ?? []) as Record<string, any>[];
    };

    /** What `oras push` sends for one file: the empty config, the file as a layer, the manifest. */
    async function orasPush(repo: string, tag: string, file: Buffer) {
      const config = await pusher.pushBlob(repo, '{}');
      const layer = await pusher.pushBlob(repo, file);
      const manifest = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: 'application/vnd.unknown.artifact.v1',
        config: { mediaType: OCI_EMPTY, digest: config, size: 2, data: 'e30=' },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer, size: file.length, annotations: { [TITLE]: 'disk.qcow2' } }],
      });
      return { layer, manifest, put: await pusher.putManifest(repo, tag, manifest, OCI_MANIFEST) };
    }

    test('two concurrent monolithic pushes racing for the last free bytes: one is stored, the other DENIED', async () => {
      await setQuota('race', 5 * MIB);
      const [a, b] = [bytesOf(3 * MIB, 1), bytesOf(3 * MIB, 2)];
      const push = (bytes: Buffer) => pusher.req('POST', `/v2/race/mono/blobs/uploads/?digest=${sha256(bytes)}`, { body: bytes });
      const results = await Promise.all([push(a), push(b)]);
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, 403], `one push passes, one is refused: ${results.map((r) => r.body.toString()).join(' | ')}`);
      const refused = results.find((r) => r.status === 403)!;
      assert.equal(refused.json.errors[0].code, 'DENIED');
      assert.match(refused.json.errors[0].message, /quota/);
      const u = await usage('race');
      assert.equal(u.storedBytes, 3 * MIB, 'exactly one blob counts');
      assert.ok(u.storedBytes <= 5 * MIB);
    });

    test('two concurrent chunked pushes (PATCH) racing for the last free bytes: one chunk is taken, the other DENIED', async () => {
      await setQuota('race', 8 * MIB); // 3 MiB in use: room for one more 3 MiB chunk, not two
      const start = async () => (await pusher.req('POST', '/v2/race/chunked/blobs/uploads/')).headers.get('location')!;
      const [la, lb] = await Promise.all([start(), start()]);
      const [a, b] = [bytesOf(3 * MIB, 3), bytesOf(3 * MIB, 4)];
      const results = await Promise.all([
        pusher.req('PATCH', la, { body: a, headers: { 'content-range': `0-${a.length - 1}` } }),
        pusher.req('PATCH', lb, { body: b, headers: { 'content-range': `0-${b.length - 1}` } }),
      ]);
      assert.deepEqual(results.map((r) => r.status).sort(), [202, 403], results.map((r) => r.body.toString()).join(' | '));
      assert.equal((await usage('race')).storedBytes, 6 * MIB);
    });

    test('an oras push of a disk counts its bytes once; a blob linked to two repositories of the project counts once', async () => {
      const qcow2 = readFileSync(await qemuConvert('ociquota-once.qcow2', await patternedRaw('ociquota-once.raw', 6 * MIB), 'qcow2'));
      // room for the disk once (plus the small config and manifest), not twice
      await setQuota('once', qcow2.length + 64 * 1024);
      const { layer, manifest, put } = await orasPush('once/disk', 'v1', qcow2);
      assert.equal(put.status, 201, put.body.toString());
      const [img] = await imagesOf('once/disk:v1');
      assert.equal(img?.state, 'ready');
      assert.equal(img.digest, layer);
      assert.equal((await usage('once')).storedBytes, qcow2.length + 2 + Buffer.byteLength(manifest), 'the layer and the image are one blob: counted once');
      // the same blob mounted into a second repository of the project adds nothing
      const mount = await pusher.req('POST', `/v2/once/other/blobs/uploads/?mount=${layer}&from=once/disk`);
      assert.equal(mount.status, 201, mount.body.toString());
      assert.equal((await usage('once')).storedBytes, qcow2.length + 2 + Buffer.byteLength(manifest));
      // a different blob that does not fit is still refused
      const big = bytesOf(128 * 1024, 5);
      const over = await pusher.req('POST', `/v2/once/other/blobs/uploads/?digest=${sha256(big)}`, { body: big });
      assert.equal(over.status, 403, over.body.toString());
    });

    test('a manifest PUT that fails after its image was made leaves no image, and the tag keeps its earlier image and manifest', async () => {
      const first = readFileSync(await qemuConvert('ociquota-fail-1.qcow2', await patternedRaw('ociquota-fail-1.raw', 2 * MIB), 'qcow2'));
      const v1 = await orasPush('fail/disk', 'v1', first);
      assert.equal(v1.put.status, 201, v1.put.body.toString());
      const [earlier] = await imagesOf('fail/disk:v1');
      assert.equal(earlier?.state, 'ready');

      // the database refuses to move the tag: recording fails after the hook made the new image
      await onDatabase(s, {
        sqlite: `CREATE TRIGGER imago_test_fail_tag BEFORE INSERT ON oci_tags WHEN NEW.tag = 'v1'
                 BEGIN SELECT RAISE(ABORT, 'forced failure of the test'); END;`,
        postgres: `CREATE FUNCTION imago_test_fail_tag() RETURNS trigger AS $$
                   BEGIN IF NEW.tag = 'v1' THEN RAISE EXCEPTION 'forced failure of the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
                   CREATE TRIGGER imago_test_fail_tag BEFORE INSERT ON oci_tags FOR EACH ROW EXECUTE FUNCTION imago_test_fail_tag();`,
      });
      const second = readFileSync(await qemuConvert('ociquota-fail-2.qcow2', await patternedRaw('ociquota-fail-2.raw', 3 * MIB), 'qcow2'));
      const v2 = await orasPush('fail/disk', 'v1', second);
      assert.equal(v2.put.status, 500, v2.put.body.toString());

      const now = await imagesOf('fail/disk:v1');
      assert.deepEqual(
        now.map((i) => i.id),
        [earlier.id],
        'the image made for the failed PUT is gone; the earlier one stays',
      );
      assert.equal(now[0]!.state, 'ready');
      const tagged = await pusher.req('GET', '/v2/fail/disk/manifests/v1');
      assert.equal(tagged.status, 200);
      assert.equal(tagged.body.toString(), v1.manifest, 'the tag still points at the earlier manifest');
      await onDatabase(s, { sqlite: 'DROP TRIGGER imago_test_fail_tag;', postgres: 'DROP TRIGGER imago_test_fail_tag ON oci_tags;' });
    });
  });
}
