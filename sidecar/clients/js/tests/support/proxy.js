// A TCP proxy in front of a sidecar's daemon API, so a test can drop the client's connections
// (what a flaky network or a restarting sidecar container does) without touching the sidecar.

import net from 'node:net';

export class DroppingProxy {
  #server;
  #sockets = new Set();
  /** Connections accepted so far. */
  accepted = 0;
  /** While true, new connections are closed at once (the sidecar looks unreachable). */
  refusing = false;

  /** @param {string} target `host:port` */
  constructor(target) {
    const [host, port] = splitAddr(target);
    this.#server = net.createServer((client) => {
      if (this.refusing) {
        client.destroy();
        return;
      }
      this.accepted += 1;
      const upstream = net.connect(port, host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }

  /** @returns {Promise<string>} the proxy's base URL */
  async listen() {
    await new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(0, '127.0.0.1', resolve);
    });
    return `http://127.0.0.1:${this.#server.address().port}`;
  }

  /** Cut every open connection, as a network failure would. */
  dropAll() {
    for (const s of this.#sockets) s.destroy();
  }

  async close() {
    this.dropAll();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

function splitAddr(addr) {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}
