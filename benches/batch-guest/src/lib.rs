//! The upper-case map of `examples/uppercase`, exported both ways for the
//! batch-vs-single measurement of `wasmstream-bench micro`.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../wit", world: "batch" });

struct Bench;

fn one(r: InputRecord) -> OutputRecord {
    OutputRecord {
        topic: None,
        key: r.key,
        value: r.value.map(|v| v.to_ascii_uppercase()),
        headers: Vec::new(),
        timestamp: None,
    }
}

impl Guest for Bench {
    fn process(input: InputRecord) -> Result<Vec<OutputRecord>, String> {
        Ok(vec![one(input)])
    }

    fn process_spans(data: Vec<u8>, spans: Vec<InSpan>) -> (Vec<u8>, Vec<OutSpan>) {
        let mut out = Vec::with_capacity(data.len());
        let mut outs = Vec::with_capacity(spans.len());
        let slice = |start: u32, len: i32| (len >= 0).then(|| &data[start as usize..start as usize + len as usize]);
        for (i, s) in spans.iter().enumerate() {
            let key = slice(s.key_start, s.key_len);
            let value = slice(s.value_start, s.value_len);
            let key_start = out.len() as u32;
            if let Some(k) = key {
                out.extend_from_slice(k);
            }
            let value_start = out.len() as u32;
            if let Some(v) = value {
                out.extend(v.iter().map(u8::to_ascii_uppercase));
            }
            outs.push(OutSpan {
                input: i as u32,
                topic: -1,
                key_start,
                key_len: key.map_or(-1, |k| k.len() as i32),
                value_start,
                value_len: value.map_or(-1, |v| v.len() as i32),
                headers_start: 0,
                headers_count: 0,
                timestamp: s.timestamp,
            });
        }
        (out, outs)
    }

    fn process_packed(inputs: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::with_capacity(inputs.len());
        let mut at = 0;
        let field = |at: &mut usize| -> Option<&[u8]> {
            let len = u32::from_le_bytes(inputs[*at..*at + 4].try_into().unwrap());
            *at += 4;
            if len == u32::MAX {
                return None;
            }
            let f = &inputs[*at..*at + len as usize];
            *at += len as usize;
            Some(f)
        };
        while at < inputs.len() {
            let key = field(&mut at);
            let value = field(&mut at);
            put(&mut out, key);
            match value {
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(v) => {
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend(v.iter().map(u8::to_ascii_uppercase));
                }
            }
        }
        out
    }

    fn process_batch(inputs: Vec<InputRecord>) -> Vec<Result<Vec<OutputRecord>, String>> {
        inputs.into_iter().map(|r| Ok(vec![one(r)])).collect()
    }
}

fn put(out: &mut Vec<u8>, f: Option<&[u8]>) {
    match f {
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(f) => {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
    }
}

export!(Bench);
