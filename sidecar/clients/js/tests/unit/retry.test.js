import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { backoffDelay } from '../../src/backoff.js';
import { ErrorCode, SidecarError } from '../../src/errors.js';
import { withRetry } from '../../src/retry.js';

const policy = { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 4, deadlineMs: 10000, codes: [ErrorCode.NO_LEADER, ErrorCode.TIMEOUT] };
const err = (code, extra = {}) => new SidecarError({ code, message: code, ...extra });

describe('backoff', () => {
  test('grows exponentially and stays under the cap', () => {
    const p = { baseDelayMs: 100, maxDelayMs: 1000 };
    assert.equal(backoffDelay(p, 1, undefined, () => 1), 100);
    assert.equal(backoffDelay(p, 3, undefined, () => 1), 400);
    assert.equal(backoffDelay(p, 3, undefined, () => 0), 200);
    assert.equal(backoffDelay(p, 30, undefined, () => 1), 1000);
  });

  test('honours retryAfterMs as a floor, but never beyond the cap', () => {
    const p = { baseDelayMs: 10, maxDelayMs: 2000 };
    assert.equal(backoffDelay(p, 1, 500, () => 0), 500);
    assert.equal(backoffDelay(p, 1, 60000, () => 0), 2000);
  });
});

describe('withRetry', () => {
  test('retries retryable codes and returns the first success', async () => {
    const seen = [];
    const result = await withRetry(async (n) => {
      if (n < 3) throw err(n === 1 ? ErrorCode.NO_LEADER : ErrorCode.TIMEOUT);
      return 'ok';
    }, policy, { onRetry: (i) => seen.push(i.code) });
    assert.equal(result, 'ok');
    assert.deepEqual(seen, ['NO_LEADER', 'TIMEOUT']);
  });

  test('does not retry other codes and reports one attempt', async () => {
    let calls = 0;
    await assert.rejects(withRetry(async () => {
      calls += 1;
      throw err(ErrorCode.ID_CONFLICT);
    }, policy), (e) => e.code === 'ID_CONFLICT' && e.attempts === 1);
    assert.equal(calls, 1);
  });

  test('gives up after maxAttempts with the last error', async () => {
    await assert.rejects(
      withRetry(async () => { throw err(ErrorCode.NO_LEADER); }, policy),
      (e) => e.code === 'NO_LEADER' && e.attempts === 5,
    );
  });

  test('gives up when the next delay would pass the deadline', async () => {
    const tight = { ...policy, maxAttempts: 100, deadlineMs: 50, maxDelayMs: 1000 };
    await assert.rejects(
      withRetry(async () => { throw err(ErrorCode.NO_LEADER, { retryAfterMs: 500 }); }, tight),
      (e) => e.code === 'NO_LEADER' && e.attempts === 1,
    );
  });

  test('stops waiting when the signal aborts', async () => {
    const ac = new AbortController();
    const p = withRetry(async () => { throw err(ErrorCode.NO_LEADER, { retryAfterMs: 1000 }); },
      { ...policy, maxDelayMs: 1000 }, { signal: ac.signal });
    ac.abort(new Error('stop'));
    await assert.rejects(p, /stop/);
  });
});
