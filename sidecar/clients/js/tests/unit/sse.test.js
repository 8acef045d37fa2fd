import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { parseSse, SseParser } from '../../src/sse.js';

async function* chunks(...parts) {
  const enc = new TextEncoder();
  for (const p of parts) yield typeof p === 'string' ? enc.encode(p) : p;
}

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

describe('SSE parsing', () => {
  test('parses the sidecar journal frames with event name, data and id', async () => {
    const events = await collect(parseSse(chunks(
      'event:operation\ndata:{"logIndex":2}\nid:2\n\n',
      'event:operation\ndata:{"logIndex":3}\nid:3\n\n',
    )));
    assert.deepEqual(events, [
      { event: 'operation', data: '{"logIndex":2}', id: '2' },
      { event: 'operation', data: '{"logIndex":3}', id: '3' },
    ]);
  });

  test('joins multi-line data, strips one leading space and ignores comments', async () => {
    const events = await collect(parseSse(chunks(': keep-alive\n\nevent: a\ndata: one\ndata:  two\n\n')));
    assert.deepEqual(events, [{ event: 'a', data: 'one\n two', id: undefined }]);
  });

  test('reassembles events and UTF-8 characters split across chunks', async () => {
    const bytes = new TextEncoder().encode('event:x\ndata:"é"\n\n');
    const cut = bytes.indexOf(0xc3) + 1; // inside the two-byte é
    const events = await collect(parseSse(chunks(bytes.slice(0, cut), bytes.slice(cut))));
    assert.deepEqual(events, [{ event: 'x', data: '"é"', id: undefined }]);
  });

  test('accepts CRLF and CR line endings, including a CRLF split between chunks', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('data:a\r'), []);
    assert.deepEqual(p.push('\n\r\ndata:b\r\r'), [
      { event: 'message', data: 'a', id: undefined },
      { event: 'message', data: 'b', id: undefined },
    ]);
  });

  test('drops an event cut off before its blank line', async () => {
    const events = await collect(parseSse(chunks('data:complete\n\ndata:cut')));
    assert.deepEqual(events.map((e) => e.data), ['complete']);
  });
});
