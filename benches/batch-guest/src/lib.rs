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

    fn process_batch(inputs: Vec<InputRecord>) -> Vec<Result<Vec<OutputRecord>, String>> {
        inputs.into_iter().map(|r| Ok(vec![one(r)])).collect()
    }
}

export!(Bench);
