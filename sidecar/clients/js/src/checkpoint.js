// A durable "last applied logIndex" in a small file, for daemons without a database to keep it
// in. Written atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves
// either the old or the new value, never a torn one.

import { open, readFile, rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export class FileCheckpoint {
  #path;

  /** @param {string} path */
  constructor(path) {
    this.#path = path;
  }

  /** @returns {Promise<number>} 0 when the file does not exist yet */
  async load() {
    let text;
    try {
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      if (err.code === 'ENOENT') return 0;
      throw err;
    }
    let value;
    try {
      value = JSON.parse(text).logIndex;
    } catch {
      value = undefined;
    }
    // A damaged checkpoint is an error, never "nothing applied": that would re-run everything.
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new Error(`checkpoint file ${this.#path} is damaged: ${JSON.stringify(text.slice(0, 100))}`);
    }
    return value;
  }

  /** @param {number} logIndex */
  async save(logIndex) {
    const dir = dirname(this.#path);
    const tmp = join(dir, `.${basename(this.#path)}.tmp`);
    const file = await open(tmp, 'w');
    try {
      await file.writeFile(`${JSON.stringify({ logIndex })}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, this.#path);
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}
