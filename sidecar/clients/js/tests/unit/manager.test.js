// ConsensusManager behaviour that needs a misbehaving sidecar: scripted stand-ins on OS-picked
// loopback ports.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import net from 'node:net';
import { describe, test } from 'node:test';

import { ConsensusManager, SidecarError } from '../../src/index.js';
import { nextEvent } from '../support/wait.js';

const STATE = { nodeId: '1', nodeName: 'node-0', clusterId: 'c', leaderId: 'node-0', isLeader: true, currentTerm: 1,
  partitionState: 'healthy', logSize: 1, lastLogIndex: 1, commitIndex: 1, appliedIndex: 1, snapshotIndex: 0,
  quorumAvailable: true, members: [] };

async function listen(server) {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${server.address().port}`;
}

describe('ConsensusManager against a misbehaving sidecar', () => {
  test('initialize() gives up at its deadline when nothing listens', async () => {
    const probe = net.createServer();
    const address = await listen(probe);
    await new Promise((resolve) => probe.close(resolve)); // a port known to be closed
    const m = new ConsensusManager({ endpoint: address, initializeTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(m.initialize(), (e) => e instanceof SidecarError && e.code === 'UNAVAILABLE' && /within 300 ms/.test(e.message));
    assert.ok(Date.now() - started < 3000);
    await m.shutdown();
  });

  test('initialize() keeps its deadline when the sidecar accepts but never answers', async () => {
    const sockets = [];
    const silent = net.createServer((s) => sockets.push(s));
    const m = new ConsensusManager({ endpoint: await listen(silent), initializeTimeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(m.initialize(), (e) => e.code === 'UNAVAILABLE');
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    await m.shutdown();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => silent.close(resolve));
  });

  test('initialize() keeps its deadline when the event stream never opens', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/v1/state') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(STATE));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' }); // headers never flushed
    });
    const m = new ConsensusManager({ endpoint: await listen(server), initializeTimeoutMs: 500 });
    const started = Date.now();
    await assert.rejects(m.initialize(), (e) => e.code === 'UNAVAILABLE' && /event stream/.test(e.message));
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    await m.shutdown();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  test("the sidecar's error event becomes sidecar:error and the event stream goes on", async () => {
    let events;
    const server = createServer((req, res) => {
      if (req.url === '/v1/state') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(STATE));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders(); // the subscription exists once the headers are out, as with warp
      events = res;
    });
    const m = new ConsensusManager({ endpoint: await listen(server) });
    await m.initialize();
    const error = nextEvent(m, 'sidecar:error', { withinMs: 5000 });
    const elected = nextEvent(m, 'consensus:leader_elected', { withinMs: 5000 });
    const body = { error: { code: 'INTERNAL', message: 'subscriber too slow: 3 events dropped' } };
    events.write(`event:error\ndata:${JSON.stringify(body)}\n\n`);
    events.write(`event:consensus:leader_elected\ndata:${JSON.stringify({ leaderId: 'node-1', term: 2 })}\n\n`);
    const err = await error;
    assert.ok(err instanceof SidecarError);
    assert.equal(err.code, 'INTERNAL');
    assert.deepEqual(await elected, { leaderId: 'node-1', term: 2 });
    assert.equal(m.isLeader, false);
    await m.shutdown();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
});
