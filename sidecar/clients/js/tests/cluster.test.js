// The client against a real 3-node raft-sidecar cluster started by this file.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';

import { ConsensusManager, FileCheckpoint, OperationHandler, SidecarError } from '../src/index.js';
import { LocalCluster } from './support/cluster.js';
import { DroppingProxy } from './support/proxy.js';
import { nextEvent, waitFor, withDeadline } from './support/wait.js';

const cluster = new LocalCluster({ nodes: 3, extraArgs: ['--max-operation-bytes', '64KiB'] });
const managers = [];
let leader;

/** A manager on node `i`, initialized, shut down in `after`. */
async function managerOn(i, options = {}) {
  const m = new ConsensusManager({ endpoint: cluster.nodes[i].api, ...options });
  managers.push(m);
  await m.initialize();
  return m;
}

function followerOf(l) {
  return (l + 1) % cluster.size;
}

/** kill -9 the leader, run `during`, restart it and wait until every node agrees again. */
async function withLeaderKilled(during) {
  const victim = await cluster.waitForLeader();
  await cluster.kill9(victim);
  try {
    return await during(victim);
  } finally {
    cluster.startNode(victim);
    leader = await cluster.waitForLeader();
  }
}

/** How many times each id appears in node `i`'s journal. */
async function idCounts(i, ids) {
  const entries = await cluster.journal(i);
  const counts = Object.fromEntries(ids.map((id) => [id, 0]));
  for (const e of entries) if (e.operation.id in counts) counts[e.operation.id] += 1;
  return counts;
}

before(async () => {
  await cluster.start();
  leader = await cluster.waitForLeader();
});

after(async () => {
  await Promise.all(managers.map((m) => m.shutdown()));
  await cluster.stop();
});

describe('ConsensusManager on a 3-node cluster', () => {
  // Leadership can move under load (a missed heartbeat on a busy machine): look it up afresh.
  beforeEach(async () => {
    leader = await cluster.waitForLeader();
  });

  test('initialize() waits for a known leader and caches the consensus state', async () => {
    const m = await managerOn(leader);
    assert.equal(m.leaderId, cluster.nodes[leader].name);
    assert.equal(m.isLeader, true);
    const state = await m.getConsensusState();
    assert.equal(state.nodeName, cluster.nodes[leader].name);
    assert.equal(state.members.length, 3);
    assert.equal(state.lastAppliedIndex, state.appliedIndex);
    assert.ok(state.timestamp instanceof Date);
  });

  test("an operation submitted on the leader commits with the integration guide's result shape", async () => {
    const m = await managerOn(leader);
    const result = await m.replicateOperation({
      id: 'leader-op-1', type: 'data_import', payload: { rows: 10 }, daemonId: 'daemon-0', timestamp: Date.now(),
    });
    assert.equal(result.operationId, 'leader-op-1');
    assert.equal(result.replicated, true);
    assert.equal(result.committed, true);
    assert.equal(result.status, 'COMMITTED');
    assert.equal(result.duplicate, false);
    assert.ok(Number.isInteger(result.logIndex) && result.logIndex >= 1);
    assert.ok(Number.isInteger(result.term) && result.term >= 1);
    const op = await m.getOperation('leader-op-1');
    assert.deepEqual([op.status, op.logIndex], ['COMMITTED', result.logIndex]);
  });

  test('an operation submitted on a follower is forwarded and lands at the same index everywhere', async () => {
    const m = await managerOn(followerOf(leader));
    assert.equal(m.isLeader, false);
    const result = await m.replicateOperation({ id: 'follower-op-1', type: 'demo', payload: { n: 1 } });
    assert.equal(result.committed, true);
    for (let i = 0; i < cluster.size; i++) {
      await cluster.waitForJournal(i, result.logIndex);
      const page = await (await fetch(`${cluster.apiUrl(i)}/v1/journal?from=${result.logIndex}&limit=1`)).json();
      assert.equal(page.entries[0].operation.id, 'follower-op-1', `node-${i}`);
    }
  });

  test('linearizable reads on every node see an operation as soon as it is acknowledged', async () => {
    const m = await managerOn(leader);
    const result = await m.replicateOperation({ id: 'lin-op-1', type: 'demo', payload: { n: 1 } });
    for (let i = 0; i < cluster.size; i++) {
      const reader = await managerOn(i);
      const op = await reader.getOperation('lin-op-1', { consistency: 'linearizable' });
      assert.equal(op.logIndex, result.logIndex, `node-${i}`);
      const page = await reader.readJournal({ from: result.logIndex, limit: 1, consistency: 'linearizable' });
      assert.equal(page.entries[0].operation.id, 'lin-op-1', `node-${i}`);
      const state = await reader.getConsensusState({ consistency: 'linearizable' });
      assert.ok(state.leaderId, `node-${i}`);
    }
  });

  test('replicateMany commits each operation once and answers each in order', async () => {
    const m = await managerOn(followerOf(leader));
    const ops = Array.from({ length: 20 }, (_, i) => ({ id: `many-${i}`, type: 'demo', payload: { i } }));
    ops[5] = { id: 'many-5', type: 'demo', payload: 'x'.repeat(2 * 1024 * 1024) };
    const items = await m.replicateMany(ops);
    assert.equal(items.length, 20);
    assert.equal(items[5].operationId, 'many-5');
    assert.equal(items[5].error.code, 'PAYLOAD_TOO_LARGE', 'refused before sending');
    const indices = new Set();
    items.forEach((item, i) => {
      if (i === 5) return;
      assert.equal(item.operationId, `many-${i}`, 'in order');
      assert.equal(item.duplicate, false);
      indices.add(item.logIndex);
    });
    assert.equal(indices.size, 19, 'one journal index each');
    const again = await m.replicateMany(ops.filter((_, i) => i !== 5));
    assert.ok(again.every((item) => item.duplicate), 'a retried batch is all duplicates');
    const ids = ops.filter((_, i) => i !== 5).map((o) => o.id);
    const counts = await idCounts(leader, ids);
    assert.ok(ids.every((id) => counts[id] === 1), JSON.stringify(counts));
  });

  test('resubmitting an id is answered as a duplicate with the original index', async () => {
    const m = await managerOn(followerOf(leader));
    const first = await m.replicateOperation({ id: 'dup-1', type: 'demo', payload: { a: 1, b: 2 } });
    // Same content with keys in another order: the sidecar compares canonical JSON.
    const again = await m.replicateOperation({ id: 'dup-1', type: 'demo', payload: { b: 2, a: 1 } });
    assert.equal(again.duplicate, true);
    assert.equal(again.logIndex, first.logIndex);
    assert.equal(again.term, first.term);
    assert.deepEqual(await idCounts(leader, ['dup-1']), { 'dup-1': 1 });
  });

  test('bad input is refused with typed errors, without retries, and the node keeps serving', async () => {
    const m = await managerOn(followerOf(leader));
    const retries = [];
    m.on('operation:retry', (r) => retries.push(r));
    const refused = async (promise, code, status) => {
      const err = await promise.then(() => assert.fail(`expected ${code}`), (e) => e);
      assert.ok(err instanceof SidecarError, `${code}: got ${err}`);
      assert.equal(err.code, code);
      assert.equal(err.status, status);
      return err;
    };
    await refused(m.replicateOperation({ id: 'no-type' }), 'INVALID_OPERATION', 400);
    await refused(m.replicateOperation({ id: 'x'.repeat(257), type: 'demo' }), 'INVALID_OPERATION', 400);
    await refused(m.replicateOperation('not an object'), 'INVALID_OPERATION', undefined);
    await m.replicateOperation({ id: 'conflict-1', type: 'demo', payload: { v: 1 } });
    const conflict = await refused(m.replicateOperation({ id: 'conflict-1', type: 'demo', payload: { v: 2 } }), 'ID_CONFLICT', 409);
    assert.equal(conflict.attempts, 1);
    await refused(m.replicateOperation({ id: 'big-1', type: 'demo', payload: 'x'.repeat(70 * 1024) }), 'PAYLOAD_TOO_LARGE', 413);
    // Far above the sidecar's limit (64 KiB + 64 KiB of slack here): the sidecar reads the body
    // and throws it away before answering, so fetch gets the 413, not a broken pipe.
    await refused(m.replicateOperation({ id: 'big-2', type: 'demo', payload: 'x'.repeat(400 * 1024) }), 'PAYLOAD_TOO_LARGE', 413);
    // Above the client's own limit: refused before it is sent.
    const small = await managerOn(followerOf(leader), { maxOperationBytes: 1024 });
    await refused(small.replicateOperation({ id: 'big-3', type: 'demo', payload: 'x'.repeat(2048) }), 'PAYLOAD_TOO_LARGE', undefined);
    await refused(m.getOperation('never-submitted'), 'NOT_FOUND', 404);
    assert.deepEqual(retries, []);
    const ok = await m.replicateOperation({ id: 'after-bad-input', type: 'demo' });
    assert.equal(ok.committed, true);
  });

  test('the journal resumes after the client drops its connection, without gaps or repeats', async () => {
    const f = followerOf(leader);
    const proxy = new DroppingProxy(cluster.nodes[f].api);
    const endpoint = await proxy.listen();
    const reader = new ConsensusManager({ endpoint, reconnect: { baseDelayMs: 20, maxDelayMs: 200 } });
    const writer = await managerOn(f);
    managers.push(reader);
    const reconnects = [];
    reader.on('journal:reconnect', (r) => reconnects.push(r));
    try {
      const start = (await writer.readJournal()).commitIndex + 1;
      const ids = Array.from({ length: 10 }, (_, k) => `resume-${k}`);
      const seen = [];
      const iterator = reader.journal({ from: start });
      const reading = (async () => {
        for await (const entry of iterator) {
          seen.push(entry);
          if (entry.operation.id === ids.at(-1)) return;
        }
      })();
      for (const id of ids.slice(0, 5)) await writer.replicateOperation({ id, type: 'demo' });
      await waitFor('the reader to see the first five operations', () => seen.length >= 5);
      proxy.dropAll();
      for (const id of ids.slice(5)) await writer.replicateOperation({ id, type: 'demo' });
      await withDeadline('the reader to see all ten operations', reading);
      assert.deepEqual(seen.map((e) => e.operation.id), ids);
      assert.deepEqual(seen.map((e) => e.logIndex), ids.map((_, k) => start + k));
      assert.ok(reconnects.length >= 1, 'the reader reconnected');
      assert.ok(proxy.accepted >= 2, `connections through the proxy: ${proxy.accepted}`);
      assert.equal(reconnects[0].nextIndex, seen[4].logIndex + 1);
    } finally {
      await reader.shutdown();
      await proxy.close();
    }
  });

  test('the journal and the event stream carry on after their sidecar restarts', async () => {
    const f = followerOf(leader);
    const other = (leader + 2) % cluster.size;
    const m = await managerOn(f, { reconnect: { baseDelayMs: 50, maxDelayMs: 500 } });
    const writer = await managerOn(leader);
    const start = (await writer.readJournal()).commitIndex + 1;
    const seen = [];
    const reading = (async () => {
      for await (const entry of m.journal({ from: start })) {
        seen.push(entry.operation.id);
        if (seen.length === 4) return;
      }
    })();
    for (const id of ['restart-0', 'restart-1']) await writer.replicateOperation({ id, type: 'demo' });
    await waitFor('the reader to see the first two operations', () => seen.length >= 2);
    const reconnected = nextEvent(m, 'sidecar:connected', { accept: (d) => d.reconnected, withinMs: 20000 });
    assert.equal(await cluster.terminate(f), 0, 'clean exit on SIGTERM');
    for (const id of ['restart-2', 'restart-3']) await writer.replicateOperation({ id, type: 'demo' });
    cluster.startNode(f);
    await withDeadline('the reader to see all four operations', reading, { withinMs: 20000 });
    await reconnected;
    assert.deepEqual(seen, ['restart-0', 'restart-1', 'restart-2', 'restart-3']);
    await cluster.waitForJournal(other, start + 3);
  });

  test('the operation handler applies each operation once across reconnects and a daemon restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'raft-js-checkpoint-'));
    const f = followerOf(leader);
    const proxy = new DroppingProxy(cluster.nodes[f].api);
    const endpoint = await proxy.listen();
    try {
      const writer = await managerOn(f);
      const checkpoint = new FileCheckpoint(join(dir, 'applied.json'));
      const base = (await writer.readJournal()).commitIndex;
      await checkpoint.save(base); // this daemon's state starts at the current end of the journal
      const applied = [];
      const runDaemon = () => {
        const m = new ConsensusManager({ endpoint, reconnect: { baseDelayMs: 20, maxDelayMs: 200 } });
        managers.push(m);
        const handler = new OperationHandler(m, { checkpoint, apply: (e) => { applied.push(e.logIndex); } });
        return { m, handler, done: handler.run() };
      };

      let daemon = runDaemon();
      const first = [];
      for (let k = 0; k < 4; k++) first.push(await writer.replicateOperation({ id: `handler-${k}`, type: 'demo' }));
      await waitFor('the first four operations to be applied', () => daemon.handler.lastApplied >= first.at(-1).logIndex);
      proxy.dropAll();
      await writer.replicateOperation({ id: 'handler-0', type: 'demo' }); // a retry: duplicate, not journalled
      const fifth = await writer.replicateOperation({ id: 'handler-4', type: 'demo' });
      await waitFor('the fifth operation to be applied', () => daemon.handler.lastApplied >= fifth.logIndex);
      await daemon.m.shutdown(); // the daemon stops ...
      await daemon.done;

      const sixth = await writer.replicateOperation({ id: 'handler-5', type: 'demo' });
      daemon = runDaemon(); // ... and restarts from its checkpoint
      await waitFor('the restarted daemon to apply the sixth operation', () => daemon.handler.lastApplied >= sixth.logIndex);
      await daemon.m.shutdown();
      await daemon.done;

      assert.deepEqual(applied, Array.from({ length: 6 }, (_, k) => base + 1 + k));
      assert.equal(await checkpoint.load(), sixth.logIndex);
    } finally {
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a snapshot that purges the Raft log is reported as log:compacted', async () => {
    const m = await managerOn(leader);
    const compacted = nextEvent(m, 'log:compacted');
    const r = await fetch(`http://${cluster.nodes[leader].admin}/admin/v1/snapshot`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cluster.token}` },
    });
    assert.equal(r.status, 200, await r.clone().text());
    const snapshot = await r.json();
    const event = await compacted;
    assert.ok(event.entriesRemoved > 0);
    assert.ok(event.snapshotIndex <= snapshot.snapshotIndex);
  });

  test('events report the new leader after the leader is killed', async () => {
    const watcher = await managerOn(followerOf(leader));
    const old = cluster.nodes[leader].name;
    await withLeaderKilled(async () => {
      const elected = await nextEvent(watcher, 'consensus:leader_elected', {
        withinMs: 15000,
        accept: (d) => d.leaderId !== old,
      });
      assert.notEqual(elected.leaderId, old);
      assert.ok(elected.term >= 2);
      assert.equal(watcher.leaderId, elected.leaderId);
      assert.equal(watcher.currentTerm, elected.term);
    });
  });

  test('a leader change missed while the event stream was down is reported after reconnecting', async () => {
    const f = followerOf(leader);
    const proxy = new DroppingProxy(cluster.nodes[f].api);
    const m = new ConsensusManager({ endpoint: await proxy.listen(), reconnect: { baseDelayMs: 20, maxDelayMs: 200 } });
    managers.push(m);
    try {
      await m.initialize();
      const old = m.leaderId;
      const disconnected = nextEvent(m, 'sidecar:disconnected');
      proxy.refusing = true;
      proxy.dropAll();
      await disconnected;
      const elected = [];
      m.on('consensus:leader_elected', (d) => elected.push(d));
      // A second manager, connected directly, proves the sidecar sent the event m missed.
      const direct = await managerOn(f);
      const sent = nextEvent(direct, 'consensus:leader_elected', { accept: (d) => d.leaderId !== old });
      await withLeaderKilled(async () => {
        const live = await sent;
        proxy.refusing = false;
        await waitFor('the disconnected manager to report the new leader', () => elected.length > 0);
        await waitFor('the manager to reconnect', () => m.leaderId === live.leaderId);
        assert.equal(elected.length, 1, JSON.stringify(elected));
        assert.deepEqual(elected[0], { leaderId: live.leaderId, term: live.term, resynced: true });
      });
    } finally {
      await m.shutdown();
      await proxy.close();
    }
  });

  test('submits retried across a leader kill end with exactly one journal entry each', async () => {
    const survivor = followerOf(leader);
    const m = await managerOn(survivor);
    const retries = [];
    m.on('operation:retry', (r) => retries.push(r));
    const ids = Array.from({ length: 8 }, (_, k) => `failover-${k}`);
    // Half are in flight when the leader dies, half are submitted while there is none.
    const early = ids.slice(0, 4).map((id) => m.replicateOperation({ id, type: 'demo', payload: { id } }));
    const results = await withLeaderKilled(async () => {
      const late = ids.slice(4).map((id) => m.replicateOperation({ id, type: 'demo', payload: { id } }));
      return Promise.all([...early, ...late]);
    });
    assert.deepEqual(results.map((r) => r.operationId), ids);
    assert.ok(results.every((r) => r.committed));
    assert.ok(retries.length >= 1, 'some submit was retried');
    assert.ok(retries.every((r) => ['NO_LEADER', 'NO_QUORUM', 'BUSY', 'TIMEOUT', 'UNAVAILABLE'].includes(r.code)));
    const last = Math.max(...results.map((r) => r.logIndex));
    for (let i = 0; i < cluster.size; i++) {
      await cluster.waitForJournal(i, last);
      assert.deepEqual(await idCounts(i, ids), Object.fromEntries(ids.map((id) => [id, 1])), `node-${i}`);
    }
    const again = await m.replicateOperation({ id: ids[0], type: 'demo', payload: { id: ids[0] } });
    assert.equal(again.duplicate, true);
  });

  test('removeNodeGracefully needs admin options', async () => {
    const m = await managerOn(leader);
    await assert.rejects(m.removeNodeGracefully('node-2'), TypeError);
  });

  test('removeNodeGracefully removes a follower by name through the admin API, following NOT_LEADER', async () => {
    const f = followerOf(leader);
    const victim = (leader + 2) % cluster.size;
    // Admin address of a follower: the client must follow the 421 NOT_LEADER to the leader.
    const m = await managerOn(f, { admin: { address: cluster.nodes[f].admin, tokenFile: cluster.tokenFile } });
    const absent = await m.removeNodeGracefully('12345');
    assert.equal(absent.removed, false);
    const result = await m.removeNodeGracefully(cluster.nodes[victim].name);
    assert.equal(result.removed, true);
    assert.equal(result.nodeId, cluster.nodes[victim].name);
    assert.match(result.memberId, /^\d+$/);
    await waitFor('the membership to drop to two voters', async () => {
      const s = await m.getConsensusState();
      return s.members.length === 2 && !s.members.some((x) => x.name === cluster.nodes[victim].name);
    });
    const ok = await m.replicateOperation({ id: 'after-removal', type: 'demo' });
    assert.equal(ok.committed, true);
  });
});

describe("moving a daemon from the integration guide's ConsensusManager", () => {
  test("the integration guide's constructor works, reads RAFT_API and stamps the daemon id", async () => {
    const daemon = { daemonId: 'daemon-guide', emit() {}, on() {} };
    const before = process.env.RAFT_API;
    process.env.RAFT_API = cluster.nodes[leader].api;
    let m;
    try {
      m = new ConsensusManager(daemon, { on() {} }, { on() {} }, { initializeTimeoutMs: 10000 });
    } finally {
      if (before === undefined) delete process.env.RAFT_API;
      else process.env.RAFT_API = before;
    }
    managers.push(m);
    assert.equal(m.endpoint, `http://${cluster.nodes[leader].api}`);
    await m.initialize();
    const r = await m.replicateOperation({ id: 'guide-style-1', type: 'demo', payload: {} });
    const page = await m.readJournal({ from: r.logIndex, limit: 1 });
    assert.equal(page.entries[0].operation.daemonId, 'daemon-guide');
  });
});
