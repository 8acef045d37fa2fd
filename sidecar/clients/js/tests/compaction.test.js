// COMPACTED handling, against a single-node sidecar that keeps only the newest 3 operations.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { CompactedError, ConsensusManager, OperationHandler } from '../src/index.js';
import { LocalCluster } from './support/cluster.js';
import { waitFor } from './support/wait.js';

const cluster = new LocalCluster({ nodes: 1, extraArgs: ['--journal-retention', '3'] });
let manager;

before(async () => {
  await cluster.start();
  await cluster.waitForLeader();
  manager = new ConsensusManager({ endpoint: cluster.nodes[0].api });
  await manager.initialize();
  for (let k = 1; k <= 6; k++) await manager.replicateOperation({ id: `op-${k}`, type: 'demo', payload: { k } });
});

after(async () => {
  await manager?.shutdown();
  await cluster.stop();
});

describe('a journal that dropped old operations', () => {
  test('a journal page below the retained range throws CompactedError with firstIndex', async () => {
    const err = await manager.readJournal({ from: 1 }).then(() => assert.fail('expected COMPACTED'), (e) => e);
    assert.ok(err instanceof CompactedError);
    assert.equal(err.code, 'COMPACTED');
    assert.equal(err.status, 410);
    assert.equal(err.firstIndex, 4);
  });

  test('iterating the journal from below the retained range throws CompactedError', async () => {
    const iterate = async () => {
      for await (const entry of manager.journal({ from: 2 })) assert.fail(`delivered ${entry.logIndex}`);
    };
    await assert.rejects(iterate(), (e) => e instanceof CompactedError && e.firstIndex === 4);
  });

  test('the operation handler stops with CompactedError when it cannot resynchronise', async () => {
    const handler = new OperationHandler(manager, { checkpoint: { load: () => 0, save: () => {} }, apply: () => {} });
    await assert.rejects(handler.run(), CompactedError);
  });

  test('the operation handler resumes from the index onCompacted resynchronised to', async () => {
    let saved = 0;
    const applied = [];
    const ac = new AbortController();
    const handler = new OperationHandler(manager, {
      checkpoint: { load: () => 0, save: (i) => { saved = i; } },
      apply: (e) => { applied.push(e.operation.id); },
      // A real daemon would load its state from elsewhere (e.g. a peer's backup) here.
      onCompacted: (err) => err.firstIndex - 1,
    });
    const done = handler.run({ signal: ac.signal });
    await waitFor('operations 4 to 6 to be applied', () => saved === 6);
    ac.abort();
    await done;
    assert.deepEqual(applied, ['op-4', 'op-5', 'op-6']);
  });
});
