// Server-Sent Events parsed from a fetch() response body (WHATWG "event stream" rules), so the
// client needs no EventSource polyfill. Yields one object per dispatched event.

/**
 * @typedef {object} SseEvent
 * @property {string} event event name (`message` when the server sent none)
 * @property {string} data data lines joined with "\n"
 * @property {string | undefined} id the `id:` field of this event, if any
 */

/**
 * Parse an event stream. Ends when the body ends; a trailing event without its blank line is
 * dropped, as the standard requires (it may be cut in half).
 * @param {AsyncIterable<Uint8Array>} body
 * @param {() => void} [onActivity] called on every chunk (comments included): idle watchdogs
 * @returns {AsyncGenerator<SseEvent>}
 */
export async function* parseSse(body, onActivity) {
  const decoder = new TextDecoder('utf-8');
  const parser = new SseParser();
  for await (const chunk of body) {
    onActivity?.();
    yield* parser.push(decoder.decode(chunk, { stream: true }));
  }
  yield* parser.push(decoder.decode());
}

/** Incremental parser: feed text, get complete events. Exported for unit tests. */
export class SseParser {
  #buffer = '';
  #event = '';
  #data = [];
  #id = undefined;
  #sawCr = false;

  /**
   * @param {string} text
   * @returns {SseEvent[]}
   */
  push(text) {
    const out = [];
    let input = text;
    // A CRLF split across two chunks: the LF belongs to the CR already consumed.
    if (this.#sawCr && input.startsWith('\n')) input = input.slice(1);
    this.#sawCr = false;
    this.#buffer += input;
    let start = 0;
    for (let i = 0; i < this.#buffer.length; i++) {
      const ch = this.#buffer[i];
      if (ch !== '\n' && ch !== '\r') continue;
      this.#line(this.#buffer.slice(start, i), out);
      if (ch === '\r') {
        if (i + 1 < this.#buffer.length) {
          if (this.#buffer[i + 1] === '\n') i++;
        } else {
          this.#sawCr = true;
        }
      }
      start = i + 1;
    }
    this.#buffer = this.#buffer.slice(start);
    return out;
  }

  #line(line, out) {
    if (line === '') {
      if (this.#data.length > 0) {
        out.push({ event: this.#event || 'message', data: this.#data.join('\n'), id: this.#id });
      }
      this.#event = '';
      this.#data = [];
      this.#id = undefined;
      return;
    }
    if (line.startsWith(':')) return; // comment: keep-alive
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.#event = value;
        break;
      case 'data':
        this.#data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.#id = value;
        break;
      default:
        break; // `retry:` and unknown fields: our reconnect policy is the client's own
    }
  }
}
