// Orders: validate, enrich and route JSON order events (JavaScript; the same
// processor as examples/python/orders, output for output; see its docstring
// for the format). Config: `large-topic` (required), `large-threshold-cents`
// (default 10000), `invalid-topic` (optional).

import { fail, output, state, text, u64Restore, u64Snapshot, utf8 } from '../wasmstream-guest.js';

const USER = /^[A-Za-z0-9_-]{1,64}$/;
const COUNTRY = /^[A-Za-z]{2}$/;

let processed = 0n;
let largeTopic = '';
let threshold = 10000;
let invalidTopic;

function parse(value) {
  let order;
  try {
    order = JSON.parse(text(value));
  } catch {
    throw new Error('value is not a JSON object');
  }
  if (order === null || typeof order !== 'object' || Array.isArray(order)) throw new Error('value is not a JSON object');
  const { user, amount_cents: amount, country } = order;
  if (typeof user !== 'string' || !USER.test(user)) throw new Error('`user` must be 1-64 of [A-Za-z0-9_-]');
  if (typeof amount !== 'number' || !Number.isSafeInteger(amount) || amount < 0) {
    throw new Error('`amount_cents` must be an integer from 0 to 2^53-1');
  }
  if (country !== undefined && country !== null && (typeof country !== 'string' || !COUNTRY.test(country))) {
    throw new Error('`country` must be two letters');
  }
  return { user, amount, country: country ?? null };
}

export function init(config) {
  const settings = new Map(config);
  largeTopic = settings.get('large-topic') ?? '';
  if (largeTopic === '') fail('processor config `large-topic` is required (the output topic of large orders)');
  const t = settings.get('large-threshold-cents') ?? '10000';
  if (!/^[0-9]+$/.test(t)) fail(`processor config \`large-threshold-cents\` = ${JSON.stringify(t)}: not a non-negative integer`);
  threshold = Number(t);
  invalidTopic = settings.get('invalid-topic') || undefined;
}

export function process(input) {
  let order;
  try {
    order = parse(input.value);
  } catch (e) {
    if (invalidTopic === undefined) fail(`order at ${input.topic}/${input.partition}@${input.offset}: ${e.message}`);
    processed += 1n;
    return [output(input.key, input.value, [['error', utf8(e.message)]], invalidTopic)];
  }
  const { user, amount, country } = order;
  const key = utf8('u/' + user);
  const stored = state.get(key);
  let total = 0n;
  let orders = 0n;
  if (stored !== undefined && stored.length === 16) {
    const view = new DataView(stored.buffer, stored.byteOffset, 16);
    total = view.getBigUint64(0, false);
    orders = view.getBigUint64(8, false);
  }
  total += BigInt(amount);
  orders += 1n;
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, total, false);
  view.setBigUint64(8, orders, false);
  state.put(key, bytes);
  const enriched =
    `{"user":"${user}","amount_cents":${amount},"total_cents":${total},"orders":${orders},` +
    `"country":${country === null ? 'null' : `"${country}"`}}`;
  processed += 1n;
  return [output(utf8(user), utf8(enriched), [], amount >= threshold ? largeTopic : undefined)];
}

export function snapshot() {
  return u64Snapshot(processed);
}

/** `origin` ({ moduleDigest, sameModule }): which module took the snapshot; one format so far. */
export function restore(bytes, origin) {
  processed = u64Restore(bytes);
}
