import { readAll, toBase64 } from './bytes.js';
import { ExecgateAbortError, ExecgateError, errorFromResponse } from './errors.js';
import { Execution, transportError, type ExecOptions } from './execution.js';
import type { ExecRequest, FileMap } from './types.js';

/** Options every call takes. */
export interface CallOptions {
  /** Aborting it ends the call; it then rejects with an AbortError (`code: "aborted"`). */
  signal?: AbortSignal | undefined;
}

/** For downloads: the whole body as bytes (default), or the body stream itself. */
export interface DownloadOptions extends CallOptions {
  stream?: boolean | undefined;
}

export interface TransportOptions {
  url: string;
  token?: string | undefined;
  team?: string | undefined;
  fetch?: typeof fetch | undefined;
  headers?: Record<string, string> | undefined;
}

type Query = Record<string, string | number | boolean | string[] | undefined>;

interface SendInit extends CallOptions {
  query?: Query | undefined;
  json?: unknown;
  body?: RequestInit['body'] | undefined;
  headers?: Record<string, string> | undefined;
  accept?: string | undefined;
}

/** The wire form of a file map: text as it is, bytes as base64. */
export function encodeFileMap(files: FileMap): Record<string, string | { data: string; encoding?: 'utf8' | 'base64'; mode?: number }> {
  const out: Record<string, string | { data: string; encoding?: 'utf8' | 'base64'; mode?: number }> = {};
  for (const [name, content] of Object.entries(files)) {
    if (typeof content === 'string') out[name] = content;
    else if (content instanceof Uint8Array) out[name] = { data: toBase64(content), encoding: 'base64' };
    else {
      const mode = content.mode === undefined ? {} : { mode: content.mode };
      out[name] =
        content.data instanceof Uint8Array
          ? { data: toBase64(content.data), encoding: 'base64', ...mode }
          : { data: content.data, ...(content.encoding ? { encoding: content.encoding } : {}), ...mode };
    }
  }
  return out;
}

const asBlob = (bytes: Uint8Array, type: string): Blob => new Blob([bytes as Uint8Array<ArrayBuffer>], { type });

/** HTTP plumbing shared by the client and its sessions. Not part of the public API. */
export class Transport {
  readonly url: string;
  readonly #fetch: typeof fetch;
  readonly #headers: Record<string, string>;

  constructor(opts: TransportOptions) {
    if (!opts.url) throw new TypeError('ExecgateClient: url is required');
    const url = new URL(opts.url);
    this.url = url.href.replace(/\/+$/, '');
    const f = opts.fetch ?? globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('ExecgateClient: no fetch available; pass one as `fetch`');
    this.#fetch = f;
    this.#headers = { ...opts.headers };
    if (opts.token) this.#headers.authorization = `Bearer ${opts.token}`;
    if (opts.team) this.#headers['x-execgate-team'] = opts.team;
  }

  /** Sends a request; any non-2xx answer becomes an ExecgateError. */
  async send(method: string, path: string, init: SendInit = {}): Promise<Response> {
    const url = new URL(this.url + path);
    for (const [k, v] of Object.entries(init.query ?? {})) {
      if (v === undefined) continue;
      for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
    }
    const headers: Record<string, string> = { ...this.#headers, accept: init.accept ?? 'application/json', ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      body = JSON.stringify(init.json);
      headers['content-type'] = 'application/json';
    }
    const signal = init.signal;
    let res: Response;
    try {
      res = await this.#fetch(url, { method, headers, body, signal });
    } catch (err) {
      throw transportError(err, signal, this.url);
    }
    if (!res.ok) {
      const err = await errorFromResponse(res);
      if (signal?.aborted) throw new ExecgateAbortError(signal.reason);
      throw err;
    }
    return res;
  }

  /** Sends a request and parses its JSON answer. */
  async json<T>(method: string, path: string, init: SendInit = {}): Promise<T> {
    const res = await this.send(method, path, init);
    try {
      return (await res.json()) as T;
    } catch (err) {
      if (init.signal?.aborted) throw new ExecgateAbortError(init.signal.reason);
      throw new ExecgateError('bad_response', `${method} ${path}: the answer is not JSON`, { status: res.status, cause: err });
    }
  }

  /** A tar download: the bytes (checked against the server's sha256 when it sends one), or the stream. */
  async download(path: string, init: DownloadOptions & { query?: Query | undefined }): Promise<Uint8Array | ReadableStream<Uint8Array>> {
    const res = await this.send('GET', path, { ...init, accept: 'application/x-tar' });
    if (init.stream) {
      if (!res.body) return new ReadableStream<Uint8Array>({ start: (c) => c.close() });
      return res.body;
    }
    let bytes: Uint8Array;
    try {
      bytes = await readAll(res.body);
    } catch (err) {
      if (init.signal?.aborted) throw new ExecgateAbortError(init.signal.reason);
      throw new ExecgateError('connection_lost', `GET ${path}: the download broke off`, { cause: err });
    }
    const expected = res.headers.get('x-execgate-sha256');
    const subtle = globalThis.crypto?.subtle;
    if (expected && subtle) {
      const digest = new Uint8Array(await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
      const actual = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
      if (actual !== expected) throw new ExecgateError('bad_response', `GET ${path}: sha256 ${actual} does not match the announced ${expected}`);
    }
    return bytes;
  }

  /** Starts an exec (`POST path`, streamed as NDJSON). */
  exec(path: string, request: ExecRequest, opts: ExecOptions = {}): Execution {
    const { stdin, files, ...rest } = request;
    const body: Record<string, unknown> = { ...rest };
    if (typeof stdin === 'string') body.stdin = stdin;
    else if (stdin instanceof Uint8Array) {
      body.stdin = toBase64(stdin);
      body.stdinEncoding = 'base64';
    }
    let form: FormData | undefined;
    if (files instanceof Uint8Array) {
      // A tar archive goes as multipart: the request JSON in a field, the tar as the `files` part.
      form = new FormData();
      form.set('request', JSON.stringify(body));
      form.set('files', asBlob(files, 'application/x-tar'), 'files.tar');
    } else if (files !== undefined) {
      body.files = encodeFileMap(files);
    }
    return new Execution(
      (signal) =>
        this.send('POST', path, {
          signal,
          accept: 'application/x-ndjson',
          ...(form ? { body: form } : { json: body }),
        }),
      opts,
    );
  }

  /** A tar body for PUT. */
  tarBody(bytes: Uint8Array): Blob {
    return asBlob(bytes, 'application/x-tar');
  }
}
