// The conformance suite's echo processor (tests/conformance/README.md), in JavaScript.

function fail(message) {
  // A thrown string is the guest error `process` returns.
  throw String(message);
}

let echoed = 0n;

export function init(config) {}

export function process(input) {
  const v = input.value;
  if (v !== undefined && v.length === 4 && String.fromCharCode(...v) === 'fail') {
    fail(`asked to fail at offset ${input.offset}`);
  }
  echoed += 1n;
  return [{ topic: undefined, key: input.key, value: v, headers: input.headers, timestamp: undefined }];
}

export function snapshot() {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, echoed, false);
  return b;
}

// `origin` ({ moduleDigest, sameModule }): which module took the snapshot.
export function restore(bytes, origin) {
  if (bytes.length !== 8) fail(`snapshot has ${bytes.length} bytes, expected 8`);
  echoed = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, false);
}
