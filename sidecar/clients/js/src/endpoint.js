// Where the sidecar's APIs are. The operator sets RAFT_API in the daemon container; the
// sidecar's own default daemon address is the fallback.

export const DEFAULT_ENDPOINT = 'http://127.0.0.1:7080';

/**
 * Normalise an address to a base URL without a trailing slash. Accepts `host:port` (how the
 * sidecar and `raft-sidecar ctl` print addresses) as well as full `http://` URLs.
 * @param {string} address
 * @returns {string}
 */
export function baseUrl(address) {
  const trimmed = String(address).trim();
  if (trimmed === '') throw new TypeError('sidecar address must not be empty');
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `http://${trimmed}`;
  const url = new URL(withScheme);
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/**
 * The daemon API base URL: the explicit option, else `RAFT_API`, else the default.
 * @param {string} [explicit]
 * @param {NodeJS.ProcessEnv} [env]
 */
export function resolveEndpoint(explicit, env = process.env) {
  return baseUrl(explicit ?? (env.RAFT_API || DEFAULT_ENDPOINT));
}
