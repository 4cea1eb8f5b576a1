// A small helper for wasmstream processors written in JavaScript.
//
// componentize-js builds a component of the `wasmstream:processor/processor`
// world (wit/processor.wit) from an ES module that exports `init`, `process`,
// `snapshot` and `restore`; the host's imports are ES modules named after
// their WIT interfaces. This module wraps them in JavaScript conventions:
//
// - `state`: the task's host-managed key-value state (Uint8Array keys and
//   values), with `getU64`/`putU64` counters stored as 8 bytes big-endian, the
//   same encoding as the Rust SDK's, so processors in any language read each
//   other's state.
// - `u64Snapshot(n)` / `u64Restore(bytes)`: a snapshot of one counter.
//   `restore(bytes, origin)` also receives which module took the bytes:
//   `origin.moduleDigest` (the SHA-256 of that component, lowercase hex) and
//   `origin.sameModule` (false after a hot swap or a change of the configured
//   module: the bytes may be in an older version's format, for this one to
//   migrate before restoring them).
// - `fail(message)`: ends `init`, `process` or `restore` with an error the host
//   reports (naming the record) instead of a trap. Anything else thrown traps.
// - `output(...)`, `headerValue(record, key)`, `utf8`/`text`, `logInfo`.

import * as hostState from 'wasmstream:processor/state@0.2.0';
import { log } from 'wasmstream:processor/log@0.2.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 bytes of a string. */
export function utf8(s) {
  return encoder.encode(s);
}

/** The string of UTF-8 bytes; throws a TypeError on invalid UTF-8. */
export function text(bytes) {
  return decoder.decode(bytes ?? new Uint8Array());
}

export const state = {
  /** @returns {Uint8Array | undefined} */
  get: (key) => hostState.get(key),
  put: (key, value) => hostState.put(key, value),
  delete: (key) => hostState.delete(key),
  /** Entries [key, value] whose key starts with `prefix`, in key order (limit 0: all). */
  scanPrefix: (prefix, limit = 0) => hostState.scanPrefix(prefix, limit),
  /** A counter written by putU64 (undefined if absent or not 8 bytes), as a BigInt. */
  getU64(key) {
    const v = hostState.get(key);
    return v === undefined || v.length !== 8 ? undefined : fromU64(v);
  },
  putU64: (key, value) => hostState.put(key, u64Snapshot(value)),
};

function fromU64(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, false);
}

/** 8 bytes big-endian: a counter in state, or a snapshot of one. */
export function u64Snapshot(n) {
  const v = new Uint8Array(8);
  new DataView(v.buffer).setBigUint64(0, BigInt(n), false);
  return v;
}

/**
 * The counter (BigInt) of a u64Snapshot; fails on a snapshot of another size.
 * `restore(bytes, origin)` passes the bytes alone: a processor whose snapshot
 * format changed checks `origin.sameModule` (and `origin.moduleDigest`) first
 * and converts an older format.
 */
export function u64Restore(bytes) {
  if (bytes.length !== 8) fail(`snapshot has ${bytes.length} bytes, expected 8`);
  return fromU64(bytes);
}

/** Reports an error to the host (which names the record) instead of trapping. */
export function fail(message) {
  throw String(message);
}

/**
 * An output record. `topic` undefined: the first configured output topic;
 * `timestamp` undefined: the input record's. `headers`: [key, Uint8Array | undefined] pairs.
 */
export function output(key, value, headers = [], topic = undefined, timestamp = undefined) {
  return { topic, key, value, headers: headers.map(([k, v]) => ({ key: k, value: v })), timestamp };
}

/** The value of the first header named `key` (undefined if absent or valueless). */
export function headerValue(record, key) {
  return record.headers.find((h) => h.key === key)?.value;
}

export function logInfo(message) {
  log('info', message);
}

export function logWarn(message) {
  log('warn', message);
}
