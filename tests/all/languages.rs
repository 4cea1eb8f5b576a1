//! The examples of every guest language on the real broker: the same word
//! count, with exact counts across a graceful restart. The Rust example's
//! run is `pipeline::graceful_stop_and_restart_resumes_at_checkpoint_and_processes_nothing_twice`.

use crate::pipeline::wordcount_across_a_graceful_restart;
use crate::support::guest;

#[test]
fn python_wordcount_counts_exactly_across_a_graceful_restart() {
    wordcount_across_a_graceful_restart("restart-python", &guest("wordcount-python"));
}

#[test]
fn javascript_wordcount_counts_exactly_across_a_graceful_restart() {
    wordcount_across_a_graceful_restart("restart-js", &guest("wordcount-js"));
}

#[test]
fn c_wordcount_counts_exactly_across_a_graceful_restart() {
    wordcount_across_a_graceful_restart("restart-c", &guest("wordcount-c"));
}

#[test]
fn go_wordcount_counts_exactly_across_a_graceful_restart() {
    wordcount_across_a_graceful_restart("restart-go", &guest("wordcount-go"));
}
