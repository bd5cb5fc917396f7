import { describe, expect, it } from 'vitest';
import { MULTIPLEXED_TYPE, negotiate, type StreamFormat } from '../../src/http/streaming.js';

/** POST /v1/exec's answer format from the Accept header (src/http/streaming.ts), weights included. */
describe('negotiate', () => {
  it.each<[string | undefined, StreamFormat, string]>([
    [undefined, 'ndjson', 'no header: the default'],
    ['', 'ndjson', 'empty'],
    ['application/x-ndjson', 'ndjson', 'NDJSON'],
    ['text/event-stream', 'sse', 'SSE'],
    ['application/json', 'json', 'one JSON answer'],
    [MULTIPLEXED_TYPE, 'multiplexed', 'the binary stream'],
    ['APPLICATION/JSON; charset=utf-8', 'json', 'case and other parameters do not matter'],
    ['*/*', 'ndjson', 'anything: the default'],
    ['application/*', 'ndjson', 'a type wildcard that NDJSON matches: the default'],
    ['text/*', 'sse', 'a type wildcard only SSE matches'],
    ['text/html', 'ndjson', 'nothing it can give: the default'],
    ['application/json, text/event-stream', 'sse', 'equal weights, both exact: SSE before JSON'],
    ['application/json, application/x-ndjson', 'ndjson', 'equal weights, both exact: NDJSON before JSON'],
    [`application/x-ndjson, ${MULTIPLEXED_TYPE}`, 'multiplexed', 'equal weights, both exact: the binary stream first'],
    ['text/event-stream;q=0.1, application/json;q=0.9', 'json', 'the higher weight wins'],
    ['application/json;q=0.5, */*;q=0.9', 'ndjson', 'a wildcard with a higher weight: the default'],
    ['application/json, */*;q=0.1', 'json', 'an exact type over a low-weight wildcard'],
    ['application/json;q=0.5, application/*;q=0.5', 'json', 'equal weights: the exact match over the wildcard'],
    ['text/event-stream;q=0', 'ndjson', 'q=0 refuses SSE'],
    ['text/event-stream;q=0, */*', 'ndjson', 'q=0 refuses SSE even where a wildcard would allow it'],
    ['application/x-ndjson;q=0, application/json', 'json', 'NDJSON refused, JSON asked for'],
    ['application/json;q=0', 'ndjson', 'the only type named, refused: the default'],
    ['application/json;q=1.000, text/event-stream;q=0.999', 'json', 'three decimals'],
    ['text/event-stream;q=abc, application/json;q=0.2', 'json', 'a malformed weight: that range is ignored'],
    ['text/event-stream;q=1.5', 'ndjson', 'a weight over 1 is malformed'],
    ['text/event-stream ; q = 0.5 , application/json ; q = 0.4', 'sse', 'spaces around the parameters'],
    [',,,', 'ndjson', 'empty ranges'],
    ['nonsense', 'ndjson', 'not a media range'],
  ])('%s → %s (%s)', (accept, expected) => {
    expect(negotiate(accept)).toBe(expected);
  });
});
