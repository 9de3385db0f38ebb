// Finding the local daemon and its token (Node only; imported lazily so browsers never load it).
// Same order as the Python client: $LLAMAHOME_ENDPOINT, else <state dir>/daemon.json, else the
// default address; $LLAMAHOME_API_KEY, else <state dir>/admin.token.

import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';

export const DEFAULT_BASE_URL = 'http://127.0.0.1:8910';
const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '[::]']);

/** The daemon's per-user state directory (platformdirs' user_state_dir for "llamahome"). */
export function stateDir(env = process.env) {
  if (env.LLAMAHOME_STATE_DIR) return env.LLAMAHOME_STATE_DIR;
  if (process.platform === 'darwin') return join(homedir(), 'Library', 'Application Support', 'llamahome');
  if (process.platform === 'win32') {
    return join(env.LOCALAPPDATA ?? join(homedir(), 'AppData', 'Local'), 'llamahome', 'llamahome');
  }
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'llamahome');
}

async function readText(path) {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** `{baseUrl, apiKey}` of the daemon running for this user (apiKey may be undefined). */
export async function localDaemon(env = process.env) {
  const dir = stateDir(env);
  let baseUrl = env.LLAMAHOME_ENDPOINT;
  if (!baseUrl) {
    try {
      const runtime = JSON.parse(await readText(join(dir, 'daemon.json')) ?? 'null');
      let host = typeof runtime?.host === 'string' ? runtime.host : '127.0.0.1';
      const port = runtime?.port;
      if (Number.isInteger(port) && port > 0 && port < 65536) {
        if (WILDCARD_HOSTS.has(host)) host = '127.0.0.1';
        if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
        baseUrl = `http://${host}:${port}`;
      }
    } catch {
      // a broken runtime file: fall back on the default address
    }
  }
  const apiKey = env.LLAMAHOME_API_KEY || await readText(join(dir, 'admin.token')) || undefined;
  return { baseUrl: baseUrl ?? DEFAULT_BASE_URL, apiKey };
}
