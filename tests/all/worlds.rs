//! The host calls a processor in batches of records. A component of the
//! `batch-processor` world (the Rust SDK) gets each batch in one call; one of
//! the typed `processor` world (one call per record, as a guest written
//! without the SDK does it) gets the same records one by one. Both give the
//! same outputs, and a record the processor rejects in the middle of a batch
//! is named by its own offset.

use std::time::Duration;

use crate::support::*;

#[test]
fn batch_and_typed_worlds_give_the_same_outputs() {
    let input: Vec<(String, String)> =
        (0..600).map(|i| (format!("k{i:04}"), format!("Value {i}, mixed Case"))).collect();
    let mut expected: Vec<(String, String)> = input.iter().map(|(k, v)| (k.clone(), v.to_ascii_uppercase())).collect();
    expected.sort();
    for module in ["uppercase", "typed_guest"] {
        let app =
            App::new(&format!("world-{}", module.replace('_', "-")), 2, &guest(module), "commit.interval.ms = 500");
        produce(&app.input, &input);
        let host = app.start();
        let out = read_topic(&app.output, input.len(), Duration::from_millis(1000), Duration::from_secs(60));
        let (status, log) = host.stop();
        assert!(status.success(), "{module}: graceful stop must exit 0: {status}\n{log}");
        let mut got: Vec<(String, String)> = out.iter().map(|r| (r.key.clone(), r.value.clone())).collect();
        got.sort();
        assert_eq!(got.len(), expected.len(), "{module}: one output per input\n{log}");
        assert_eq!(got, expected, "{module}: every value upper-cased under its key");
    }
}

#[test]
fn a_rejected_record_in_the_middle_of_a_batch_is_named_by_its_offset() {
    let app = App::new("reject", 1, &guest("wordcount"), "commit.interval.ms = 500");
    // Offsets 0..40 are sentences, 40 is not UTF-8 (the word count rejects
    // it), 41..80 are sentences again: produced before the host starts, they
    // reach it together.
    let good = sentences(80, 7);
    let bad: &[u8] = b"caf\xe9";
    let records = good[..40].iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).chain([(&b"bad"[..], bad)]);
    produce_bytes(&app.input, records.chain(good[40..].iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))));
    let mut host = app.start();
    let status = host.wait(Duration::from_secs(60));
    let log = host.log_text();
    assert!(!status.success(), "a rejected record stops the host (no error policy yet)\n{log}");
    let named = format!(
        "record {}/0@40: processor process-batch returned an error: value of {}/0@40 is not UTF-8",
        app.input, app.input
    );
    assert!(log.contains(&named), "expected `{named}` in\n{log}");
}
