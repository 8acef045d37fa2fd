import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { baseUrl, resolveEndpoint } from '../../src/endpoint.js';
import { CompactedError, SidecarError } from '../../src/errors.js';
import { parseAnswer } from '../../src/http.js';

describe('error bodies', () => {
  test('carry the sidecar code, status and hints', () => {
    const body = { error: { code: 'NO_QUORUM', message: 'minority', leaderId: 'node-0', retryAfterMs: 500 } };
    assert.throws(() => parseAnswer({ ok: false, status: 503 }, JSON.stringify(body), 'POST x'), (e) =>
      e instanceof SidecarError && e.code === 'NO_QUORUM' && e.status === 503 && e.leaderId === 'node-0' && e.retryAfterMs === 500);
  });

  test('COMPACTED becomes a CompactedError with firstIndex', () => {
    const body = { error: { code: 'COMPACTED', message: 'gone', firstIndex: 9 } };
    assert.throws(() => parseAnswer({ ok: false, status: 410 }, JSON.stringify(body), 'GET x'), (e) =>
      e instanceof CompactedError && e instanceof SidecarError && e.firstIndex === 9);
  });

  test('an answer without an error body is INTERNAL with the status', () => {
    assert.throws(() => parseAnswer({ ok: false, status: 502 }, 'Bad Gateway', 'GET x'), (e) =>
      e.code === 'INTERNAL' && e.status === 502 && /Bad Gateway/.test(e.message));
  });
});

describe('endpoint', () => {
  test('comes from RAFT_API, else the sidecar default', () => {
    assert.equal(resolveEndpoint(undefined, { RAFT_API: '127.0.0.1:7081' }), 'http://127.0.0.1:7081');
    assert.equal(resolveEndpoint(undefined, {}), 'http://127.0.0.1:7080');
    assert.equal(resolveEndpoint('http://localhost:9000/', { RAFT_API: 'x:1' }), 'http://localhost:9000');
  });

  test('accepts host:port and URLs alike', () => {
    assert.equal(baseUrl('127.0.0.1:7090'), 'http://127.0.0.1:7090');
    assert.equal(baseUrl('https://sidecar.example/prefix/'), 'https://sidecar.example/prefix');
  });
});
