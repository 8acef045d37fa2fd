// A cluster of real `raft-sidecar run` processes on loopback, as the Rust tests start them
// (sidecar/src/cli/local_cluster.rs): OS-picked ports, a temp dir per cluster, a token file,
// static bootstrap through --initial-members.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

import { waitFor } from './wait.js';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../..');

/** The sidecar binary: RAFT_SIDECAR_BIN, else the cargo target dir, else ./target. */
export function sidecarBinary(env = process.env) {
  const candidates = env.RAFT_SIDECAR_BIN
    ? [env.RAFT_SIDECAR_BIN]
    : [
        ...(env.CARGO_TARGET_DIR ? [join(env.CARGO_TARGET_DIR, 'debug', 'raft-sidecar')] : []),
        join(REPO_ROOT, 'target', 'debug', 'raft-sidecar'),
      ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `raft-sidecar binary not found (looked at ${candidates.join(', ')}). Build it with ` +
        '`cargo build -p raft-sidecar` and set RAFT_SIDECAR_BIN or CARGO_TARGET_DIR.',
    );
  }
  return found;
}

async function waitForExit(exited, withinMs, what) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${withinMs} ms waiting for ${what}`)), withinMs);
  });
  try {
    return await Promise.race([exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `count` distinct free loopback ports, held open together so none is handed out twice. */
async function freePorts(count) {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise((res, rej) => {
      const s = net.createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => res(s));
    })),
  );
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((res) => s.close(res))));
  return ports;
}

export class LocalCluster {
  /** @type {{name: string, dir: string, log: string, api: string, admin: string, peer: string}[]} */
  nodes = [];
  /** @type {(import('node:child_process').ChildProcess | null)[]} */
  children = [];
  clusterId = 'js-client-test';

  /**
   * @param {{nodes?: number, extraArgs?: string[]}} [opts]
   */
  constructor({ nodes = 3, extraArgs = [] } = {}) {
    this.size = nodes;
    this.extraArgs = extraArgs;
    this.bin = sidecarBinary();
  }

  async start() {
    this.root = mkdtempSync(join(tmpdir(), 'raft-js-client-'));
    this.token = randomBytes(16).toString('hex');
    this.tokenFile = join(this.root, 'token');
    writeFileSync(this.tokenFile, this.token);
    const ports = await freePorts(this.size * 3);
    for (let i = 0; i < this.size; i++) {
      const [api, admin, peer] = ports.slice(i * 3, i * 3 + 3).map((p) => `127.0.0.1:${p}`);
      const dir = join(this.root, `node-${i}`);
      this.nodes.push({ name: `node-${i}`, dir, log: `${dir}.log`, api, admin, peer });
      this.children.push(null);
    }
    // If the test process dies without running `after`, leave no sidecar behind.
    process.once('exit', () => {
      for (const c of this.children) if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    });
    for (let i = 0; i < this.size; i++) this.startNode(i);
    return this;
  }

  /** Start (or restart, same data dir) node `i`; output goes to `<root>/node-i.log`. */
  startNode(i) {
    const n = this.nodes[i];
    const members = this.nodes.map((m) => `${m.name}=${m.peer}`).join(',');
    const log = openSync(n.log, 'a');
    const env = { ...process.env };
    delete env.HOSTNAME;
    const child = spawn(this.bin, [
      'run',
      '--data-dir', n.dir,
      '--node-name', n.name,
      '--cluster-id', this.clusterId,
      '--api-addr', n.api,
      '--admin-addr', n.admin,
      '--peer-addr', n.peer,
      '--advertise-peer', n.peer,
      '--advertise-admin', n.admin,
      '--auth-token-file', this.tokenFile,
      // The JavaScript client's admin calls do not present client certificates yet.
      '--insecure-plaintext',
      '--initial-members', members,
      ...this.extraArgs,
    ], { stdio: ['ignore', log, log], env });
    closeSync(log);
    this.children[i] = child;
  }

  isRunning(i) {
    const c = this.children[i];
    return c !== null && c.exitCode === null && c.signalCode === null;
  }

  /** kill -9 node `i` and wait until the process is gone. */
  async kill9(i) {
    const child = this.children[i];
    if (!this.isRunning(i)) return;
    const exited = new Promise((res) => child.once('exit', res));
    process.kill(child.pid, 'SIGKILL');
    await exited;
    this.children[i] = null;
  }

  /** SIGTERM node `i` and wait up to `graceMs` for a clean exit; returns the exit code. */
  async terminate(i, { graceMs = 15000 } = {}) {
    const child = this.children[i];
    if (!this.isRunning(i)) return null;
    const exited = new Promise((res) => child.once('exit', (code) => res(code)));
    child.kill('SIGTERM');
    const code = await waitForExit(exited, graceMs, `node-${i} to exit after SIGTERM`);
    this.children[i] = null;
    return code;
  }

  /** Base URL of node `i`'s daemon API. */
  apiUrl(i) {
    return `http://${this.nodes[i].api}`;
  }

  async state(i) {
    const r = await fetch(`${this.apiUrl(i)}/v1/state`, { signal: AbortSignal.timeout(2000) });
    if (!r.ok) throw new Error(`node-${i} /v1/state: HTTP ${r.status}`);
    return r.json();
  }

  /** Index of the node every running member names as leader. */
  async waitForLeader({ withinMs = 20000 } = {}) {
    try {
      return await waitFor('every running node to agree on one leader', async () => {
        const running = this.nodes.map((_, i) => i).filter((i) => this.isRunning(i));
        const leaders = await Promise.all(running.map(async (i) => (await this.state(i)).leaderId));
        const first = leaders[0];
        if (!first || !leaders.every((l) => l === first)) throw new Error(`leaders seen: ${JSON.stringify(leaders)}`);
        return this.nodes.findIndex((n) => n.name === first);
      }, { withinMs });
    } catch (err) {
      err.message += `\n${this.logTails()}`;
      throw err;
    }
  }

  /** Wait until node `i` has applied journal index `logIndex` (e.g. after a restart). */
  async waitForJournal(i, logIndex, { withinMs = 15000 } = {}) {
    return waitFor(`node-${i} to apply journal index ${logIndex}`, async () => {
      const r = await fetch(`${this.apiUrl(i)}/v1/journal?from=${logIndex}&limit=1`, { signal: AbortSignal.timeout(2000) });
      const page = await r.json();
      return page.commitIndex >= logIndex ? page : false;
    }, { withinMs });
  }

  /** Every journal entry of node `i` (all pages). */
  async journal(i) {
    const out = [];
    let from = 1;
    for (;;) {
      const r = await fetch(`${this.apiUrl(i)}/v1/journal?from=${from}&limit=1000`, { signal: AbortSignal.timeout(5000) });
      const page = await r.json();
      out.push(...page.entries);
      if (page.entries.length === 0) return out;
      from = page.nextIndex;
    }
  }

  logTails(lines = 15) {
    return this.nodes.map((n) => {
      let text = '';
      try {
        text = readFileSync(n.log, 'utf8');
      } catch {
        text = '(no log)';
      }
      return `--- ${n.name} log tail ---\n${text.split('\n').slice(-lines).join('\n')}`;
    }).join('\n');
  }

  /** SIGTERM every node, SIGKILL what is left after `graceMs`, delete the temp dir. */
  async stop({ graceMs = 10000 } = {}) {
    await Promise.all(this.children.map(async (child, i) => {
      if (!this.isRunning(i)) return;
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }));
    if (this.root && !process.env.KEEP_TEST_CLUSTER) rmSync(this.root, { recursive: true, force: true });
  }
}
