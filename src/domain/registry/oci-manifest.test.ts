import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainError } from '../errors.js';
import {
  DOCKER_LIST,
  DOCKER_MANIFEST,
  jsonDepth,
  MANIFEST_LIMITS,
  OCI_EMPTY,
  OCI_INDEX,
  OCI_MANIFEST,
  parseManifest,
  referencedBlobs,
} from './oci-manifest.js';
import { parseDigest, parseReference, parseRepositoryName } from './repository-name.js';

const D = (c: string) => `sha256:${c.repeat(64)}`;
const bytes = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o));
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    if (e instanceof DomainError) return e.code;
    throw e;
  }
  return 'ok';
};

test('jsonDepth counts brackets outside strings only, escapes included', () => {
  assert.equal(jsonDepth(bytes('{"a":[1,{"b":2}]}')), 3);
  assert.equal(jsonDepth(bytes('{"a":"[[[[{{{{"}')), 1);
  assert.equal(jsonDepth(bytes('{"a":"\\"[[[["}')), 1);
  assert.equal(jsonDepth(bytes('['.repeat(20_000))), 10_001);
});

test('media type: from the body, else the Content-Type, else by shape; both must agree', () => {
  const img = { schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: D('a'), size: 2 }, layers: [] };
  assert.equal(parseManifest(bytes(img), undefined).mediaType, OCI_MANIFEST);
  assert.equal(parseManifest(bytes(img), `${DOCKER_MANIFEST}; charset=utf-8`).mediaType, DOCKER_MANIFEST);
  assert.equal(parseManifest(bytes({ schemaVersion: 2, manifests: [] }), undefined).mediaType, OCI_INDEX);
  assert.equal(parseManifest(bytes({ schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [] }), 'application/json').kind, 'index');
  assert.equal(
    code(() => parseManifest(bytes({ ...img, mediaType: OCI_MANIFEST }), DOCKER_MANIFEST)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(bytes({ ...img, mediaType: 'application/x-unknown' }), undefined)),
    'MANIFEST_INVALID',
  );
});

test('artifactType: the manifest own, else the config media type unless it is the empty config', () => {
  const base = { schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [{ mediaType: 'application/octet-stream', digest: D('b'), size: 1 }] };
  const withCfg = (mediaType: string) => ({ ...base, config: { mediaType, digest: D('a'), size: 2 } });
  assert.equal(parseManifest(bytes(withCfg('application/vnd.example.cfg')), undefined).artifactType, 'application/vnd.example.cfg');
  assert.equal(parseManifest(bytes(withCfg(OCI_EMPTY)), undefined).artifactType, undefined);
  assert.equal(parseManifest(bytes({ ...withCfg(OCI_EMPTY), artifactType: 'application/x.sig' }), undefined).artifactType, 'application/x.sig');
  const m = parseManifest(bytes({ ...withCfg(OCI_EMPTY), subject: { mediaType: OCI_MANIFEST, digest: D('c'), size: 9 } }), undefined);
  assert.equal(m.subject?.digest, D('c'));
  assert.deepEqual(
    referencedBlobs(m).map((d) => d.digest),
    [D('a'), D('b')],
  );
});

test('descriptors and limits are checked', () => {
  const cfg = { mediaType: 'x', digest: D('a'), size: 2 };
  const mk = (layers: unknown) => bytes({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: cfg, layers });
  assert.equal(
    code(() => parseManifest(mk([{ mediaType: 'x', digest: 'sha512:abc', size: 1 }]), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk([{ mediaType: 'x', digest: D('b'), size: -1 }]), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk([{ mediaType: 'x', digest: D('b'), size: 1.5 }]), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk([{ digest: D('b'), size: 1 }]), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk([{ mediaType: 'x', digest: D('b'), size: 1, annotations: { a: 1 } }]), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk(Array.from({ length: MANIFEST_LIMITS.maxDescriptors + 1 }, () => cfg)), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(mk(Array.from({ length: MANIFEST_LIMITS.maxDescriptors }, () => cfg)), undefined)),
    'ok',
  );
  assert.equal(
    code(() => parseManifest(Buffer.alloc(MANIFEST_LIMITS.maxBytes + 1, 0x20), undefined)),
    'SIZE_LIMIT',
  );
  assert.equal(
    code(() => parseManifest(bytes(`{"schemaVersion":2,"x":${'['.repeat(33)}${']'.repeat(33)}}`), undefined)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(bytes(`{"schemaVersion":2,"manifests":[],"x":${'['.repeat(30)}${']'.repeat(30)}}`), undefined)),
    'ok',
  );
  assert.equal(
    code(() => parseManifest(bytes('{"schemaVersion":2}'), OCI_INDEX)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(bytes('{"schemaVersion":2}'), OCI_MANIFEST)),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseManifest(bytes('\u00ff'), undefined)),
    'MANIFEST_INVALID',
  );
});

test('names map onto projects; references and digests', () => {
  assert.deepEqual(parseRepositoryName('proj/alma/disk'), { name: 'proj/alma/disk', project: 'proj' });
  for (const bad of ['alma', 'Proj/x', 'proj/x/', 'proj/-x', 'proj/x..y', `${'p'.repeat(65)}/x`, `proj/${'x'.repeat(260)}`]) {
    assert.equal(
      code(() => parseRepositoryName(bad)),
      'NAME_INVALID',
      bad,
    );
  }
  assert.deepEqual(parseReference('v1.0_rc-1'), { kind: 'tag', tag: 'v1.0_rc-1' });
  assert.deepEqual(parseReference(D('e')), { kind: 'digest', digest: D('e') });
  assert.equal(
    code(() => parseReference('.hidden')),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseReference('x'.repeat(129))),
    'MANIFEST_INVALID',
  );
  assert.equal(
    code(() => parseDigest('sha512:abcd')),
    'DIGEST_INVALID',
  );
  assert.match(
    (() => {
      try {
        parseDigest('sha512:abcd');
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })(),
    /sha512.*not supported/,
  );
  assert.equal(
    code(() => parseDigest(`sha256:${'A'.repeat(64)}`)),
    'DIGEST_INVALID',
  );
});
