/**
 * What a log line says about a request. Fastify's own serializer writes the whole URL, query string included:
 * a client that puts its token there (`?token=…`, as some EventSource code does) would have it written to the
 * log. The service never reads credentials from the URL, so the log keeps only the query parameters the API
 * defines, and writes `[redacted]` for anything else.
 */

/** Every query parameter of the API (src/http/schemas.ts): none of them carries a secret. */
const QUERY_PARAMS = new Set(['team', 'decision', 'since', 'limit', 'status', 'include']);

export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const pairs = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      let name: string;
      try {
        name = decodeURIComponent(eq < 0 ? pair : pair.slice(0, eq));
      } catch {
        return '[redacted]';
      }
      return QUERY_PARAMS.has(name) ? pair : '[redacted]';
    });
  return `${url.slice(0, q)}?${pairs.join('&')}`;
}

interface LoggedRequest {
  method: string;
  url: string;
  host?: string;
  ip?: string;
  socket?: { remotePort?: number | undefined } | null;
}

/** pino `serializers` for the root logger: Fastify's request fields, with the URL through redactUrl. */
export const logSerializers = {
  req: (req: LoggedRequest) => ({ method: req.method, url: redactUrl(req.url), host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort }),
};
