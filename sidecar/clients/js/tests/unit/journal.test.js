// The journal iterator against a scripted stand-in for the sidecar's watch endpoint, for the
// cases a real cluster cannot produce on demand.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, test } from 'node:test';

import { CompactedError } from '../../src/errors.js';
import { watchJournal } from '../../src/journal.js';
import { withDeadline } from '../support/wait.js';

const entry = (i) => `event:operation\ndata:${JSON.stringify({ logIndex: i, term: 1, operation: { id: `op-${i}`, type: 't' } })}\nid:${i}\n\n`;

/** Each connection gets the next script: a function (req, res) that writes and ends. */
let scripts = [];
const requests = [];
const server = createServer((req, res) => {
  requests.push({ url: req.url, lastEventId: req.headers['last-event-id'] });
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  const script = scripts.shift();
  if (script) script(res);
  else res.end();
});
let endpoint;

before(async () => {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections(); // undici keeps idle keep-alive sockets open for seconds
  return new Promise((resolve) => server.close(resolve));
});

function watch(from, signal) {
  return watchJournal({
    endpoint, from, signal,
    reconnect: { baseDelayMs: 1, maxDelayMs: 5 },
    connectTimeoutMs: 2000,
    idleTimeoutMs: 5000,
  });
}

describe('journal iterator', () => {
  test('resumes after a closed stream with Last-Event-ID and from set past the last entry', async () => {
    requests.length = 0;
    scripts = [
      (res) => res.end(entry(5) + entry(6)),
      (res) => res.end(entry(6) + entry(7)), // a repeat of 6 must not be delivered twice
    ];
    const seen = [];
    const ac = new AbortController();
    await withDeadline('entries 5 to 7', (async () => {
      for await (const e of watch(5, ac.signal)) {
        seen.push(e.logIndex);
        if (e.logIndex === 7) ac.abort();
      }
    })());
    assert.deepEqual(seen, [5, 6, 7]);
    assert.deepEqual(requests.slice(0, 2), [
      { url: '/v1/journal/watch?from=5', lastEventId: '4' },
      { url: '/v1/journal/watch?from=7', lastEventId: '6' },
    ]);
  });

  test('a COMPACTED error event in the stream throws CompactedError after the entries before it', async () => {
    const error = { error: { code: 'COMPACTED', message: 'index 3 was compacted', firstIndex: 9 } };
    scripts = [(res) => res.end(entry(1) + entry(2) + `event:error\ndata:${JSON.stringify(error)}\n\n`)];
    const seen = [];
    await assert.rejects(withDeadline('the stream error', (async () => {
      for await (const e of watch(1)) seen.push(e.logIndex);
    })()), (err) => err instanceof CompactedError && err.firstIndex === 9 && err.status === 410);
    assert.deepEqual(seen, [1, 2]);
  });

  test('a retryable error event (a cut-off or removed node) reconnects instead of ending the iteration', async () => {
    requests.length = 0;
    const error = { error: { code: 'NO_QUORUM', message: 'this node is cut off from the majority' } };
    scripts = [
      (res) => res.end(entry(1) + `event:error\ndata:${JSON.stringify(error)}\n\n`),
      (res) => res.end(entry(2)),
    ];
    const seen = [];
    const reconnects = [];
    const ac = new AbortController();
    await withDeadline('entries 1 and 2', (async () => {
      const it = watchJournal({
        endpoint, from: 1, signal: ac.signal,
        reconnect: { baseDelayMs: 1, maxDelayMs: 5 },
        connectTimeoutMs: 2000,
        idleTimeoutMs: 5000,
        onReconnect: (info) => reconnects.push(info.error?.code),
      });
      for await (const e of it) {
        seen.push(e.logIndex);
        if (e.logIndex === 2) ac.abort();
      }
    })());
    assert.deepEqual(seen, [1, 2]);
    assert.deepEqual(reconnects, ['NO_QUORUM']);
    assert.equal(requests[1].url, '/v1/journal/watch?from=2');
  });

  test('breaking out of the loop closes the connection', async () => {
    let closed;
    const gone = new Promise((resolve) => { closed = resolve; });
    scripts = [(res) => {
      res.write(entry(1));
      res.on('close', closed);
    }];
    for await (const e of watch(1)) {
      assert.equal(e.logIndex, 1);
      break;
    }
    await withDeadline('the server to see the connection close', gone);
  });
});
