//! The configuration file: Kafka Streams property names verbatim, a
//! `[processor]` section and a librdkafka pass-through (`[kafka]`).
//!
//! Owns parsing, defaults and validation, and nothing else: every key the host
//! understands is listed once in [`KEYS`], with its default and meaning; an
//! unknown key or a bad value is an error that names the key (and the closest
//! valid one). Paths are resolved relative to the config file. Nothing here
//! touches Kafka, the state directory or the module's contents.
//!
//! ```toml
//! application.id = "wordcount"           # dotted keys may be bare or "quoted"
//! bootstrap.servers = "127.0.0.1:9092"
//! commit.interval.ms = 30000
//! processing.guarantee = "at_least_once"
//! state.dir = "/var/lib/wasmstream"
//!
//! [processor]
//! module = "wordcount.wasm"
//! inputs = ["sentences"]
//! outputs = ["word-counts"]
//! config = { min-length = "2" }
//!
//! [kafka]                                 # librdkafka properties, both clients
//! "socket.keepalive.enable" = "true"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `processing.guarantee`, as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingGuarantee {
    /// No checkpoint protocol: state writes go straight to RocksDB, Kafka commits
    /// offsets on its own schedule; a crash may lose or repeat anything.
    None,
    /// Checkpoints after every output is acknowledged; a crash repeats at most
    /// the outputs of the last interval, and state always matches the offset.
    AtLeastOnce,
    /// One Kafka transaction per checkpoint interval.
    ExactlyOnce,
}

impl ProcessingGuarantee {
    const NAMES: [&str; 3] = ["at_least_once", "exactly_once", "none"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "at_least_once" => Some(Self::AtLeastOnce),
            // Kafka Streams 3.x+ calls the only remaining exactly-once mode `exactly_once_v2`.
            "exactly_once" | "exactly_once_v2" => Some(Self::ExactlyOnce),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AtLeastOnce => "at_least_once",
            Self::ExactlyOnce => "exactly_once",
        }
    }
}

impl fmt::Display for ProcessingGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the host needs to run one application.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages), if any.
    pub source: Option<PathBuf>,
    pub application_id: String,
    pub bootstrap_servers: String,
    pub commit_interval: Duration,
    pub processing_guarantee: ProcessingGuarantee,
    pub state_dir: PathBuf,
    /// Dirty state bytes of a task that force an early checkpoint.
    pub cache_max_bytes: u64,
    /// At-least-once: state changes of a task sent to the changelog ahead of
    /// its checkpoint whenever this many bytes accumulate (0: never).
    pub changelog_ahead_bytes: u64,
    /// A checkpoint of this many state entries or more is written to RocksDB
    /// as table files (0: never).
    pub checkpoint_table_entries: u64,
    /// Replication factor of the topics the host creates (-1: the broker's default).
    pub replication_factor: i32,
    pub processor: ProcessorConfig,
    pub kafka: KafkaPassthrough,
    /// Where the admin endpoint listens (`None`: no endpoint).
    pub admin_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub module: PathBuf,
    pub inputs: Vec<String>,
    /// The first one is where outputs without a topic go.
    pub outputs: Vec<String>,
    /// `[processor.config]`, passed to the guest's `init`.
    pub config: Vec<(String, String)>,
    pub max_memory_bytes: u64,
    /// Hot-swap when the module file changes.
    pub watch: bool,
}

/// librdkafka properties passed through verbatim: `common` to both clients,
/// the others to one. librdkafka itself rejects unknown names.
#[derive(Debug, Clone, Default)]
pub struct KafkaPassthrough {
    pub common: BTreeMap<String, String>,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

impl Config {
    /// The directory holding this application's task state.
    pub fn app_state_dir(&self) -> PathBuf {
        self.state_dir.join(&self.application_id)
    }

    /// Where compiled modules are kept across restarts (`@` cannot begin an
    /// `application.id`, so no application's state is there).
    pub fn compile_cache(&self) -> crate::compiled::CompileCache {
        crate::compiled::CompileCache::new(self.state_dir.join("@compiled"))
    }

    /// Where a failure of this configuration is reported from.
    pub fn origin(&self) -> String {
        self.source.as_deref().map_or_else(|| "configuration".into(), |p| p.display().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: unknown key `{key}`{}", suggest(.suggestion))]
    UnknownKey { origin: String, key: String, suggestion: Option<&'static str> },
    #[error("{origin}: key `{key}` is set twice")]
    Duplicate { origin: String, key: String },
    #[error("{origin}: bad value {value} for `{key}`: expected {expected}{}", suggest(.suggestion))]
    BadValue { origin: String, key: String, value: String, expected: String, suggestion: Option<&'static str> },
    #[error("{origin}: `{key}` is required ({doc})")]
    Missing { origin: String, key: &'static str, doc: &'static str },
    #[error("{origin}: `processor.module` = {path}: no such file")]
    ModuleNotFound { origin: String, path: PathBuf },
    #[error("bad override `{0}`: expected KEY=VALUE")]
    BadOverride(String),
}

fn suggest(s: &Option<&'static str>) -> String {
    s.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

/// What a key's value must look like.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Replication,
    Millis,
    Bytes,
    /// Bytes, or 0 for "never".
    BytesOrOff,
    /// A number of state entries, or 0 for "never".
    EntriesOrOff,
    Guarantee,
    Path,
    TopicList,
    /// `host:port`, or `none`.
    Listen,
    /// `true` or `false`.
    Flag,
}

/// A key the host understands.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    kind: Kind,
    /// `None`: required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// Every key, its default and its meaning: the one place these facts live
/// (`wasmstream config-keys` prints this table).
pub const KEYS: &[Key] = &[
    Key {
        name: "application.id",
        kind: Kind::Text,
        default: None,
        doc: "names the consumer group and the state directory <state.dir>/<application.id>/",
    },
    Key { name: "bootstrap.servers", kind: Kind::Text, default: None, doc: "Kafka brokers, host:port[,host:port...]" },
    Key {
        name: "commit.interval.ms",
        kind: Kind::Millis,
        default: Some("30000 (100 under exactly_once)"),
        doc: "minimum time between checkpoints of a task",
    },
    Key {
        name: "processing.guarantee",
        kind: Kind::Guarantee,
        default: Some("at_least_once"),
        doc: "at_least_once, exactly_once (alias exactly_once_v2) or none",
    },
    Key {
        name: "state.dir",
        kind: Kind::Path,
        default: Some("<temp dir>/wasmstream"),
        doc: "local state root; task state lives in <state.dir>/<application.id>/, compiled modules in <state.dir>/@compiled/",
    },
    Key {
        name: "statestore.cache.max.bytes",
        kind: Kind::Bytes,
        default: Some("10485760"),
        doc: "dirty state bytes of a task that trigger a checkpoint before commit.interval.ms",
    },
    Key {
        name: "statestore.changelog.ahead.bytes",
        kind: Kind::BytesOrOff,
        default: Some("1048576"),
        doc: "at_least_once and exactly_once: a task's state changes go to the changelog ahead of its next checkpoint whenever this many bytes of them accumulate (under exactly_once in the interval's transaction), so that the checkpoint has only the rest to send; 0: all at the checkpoint",
    },
    Key {
        name: "statestore.checkpoint.table.entries",
        kind: Kind::EntriesOrOff,
        default: Some("100000"),
        doc: "at_least_once and exactly_once: a task's checkpoint of this many state entries or more goes to RocksDB as table files, built while its changelog records are sent (those sent ahead of the checkpoint in tables of 250000 entries as they go, the rest after its cut, one file per 250000 entries and at most one per core and 4, in parallel) and then ingested (1-3 ms), instead of a batch written through the memtable after them (200-300 ms for 1M entries); smaller checkpoints stay batches, whose entries read back faster; 0: never",
    },
    Key {
        name: "replication.factor",
        kind: Kind::Replication,
        default: Some("-1 (the broker's default.replication.factor)"),
        doc: "replication factor of the changelog topic the host creates",
    },
    Key {
        name: "admin.listen",
        kind: Kind::Listen,
        default: Some("127.0.0.1:0 (a free port on the loopback interface)"),
        doc: "HTTP admin endpoint of a running host (GET /status, POST /swap), found by `wasmstream status` and `wasmstream swap` through <state.dir>/<application.id>/admin.addr; none: no endpoint",
    },
    Key {
        name: "processor.module",
        kind: Kind::Path,
        default: None,
        doc: "the processor component (.wasm), relative to this file",
    },
    Key {
        name: "processor.watch",
        kind: Kind::Flag,
        default: Some("false"),
        doc: "hot-swap the processor when the processor.module file changes (polled every 250 ms; swapped once it has stayed the same for 1 s, so a copy in progress is not loaded; replacing it by a rename is the safe way)",
    },
    Key {
        name: "processor.inputs",
        kind: Kind::TopicList,
        default: None,
        doc: "input topics (co-partitioned: partition N of each forms task N)",
    },
    Key {
        name: "processor.outputs",
        kind: Kind::TopicList,
        default: None,
        doc: "output topics a processor may name; the first is the default",
    },
    Key {
        name: "processor.max.memory.bytes",
        kind: Kind::Bytes,
        default: Some("268435456"),
        doc: "linear memory limit of one processor instance",
    },
];

/// Prefixes under which any key is accepted and passed on.
const PASSTHROUGH: [(&str, &str); 4] = [
    ("processor.config.", "guest configuration, passed to the processor's init"),
    ("kafka.consumer.", "librdkafka property for the consumer only"),
    ("kafka.producer.", "librdkafka property for the producer only"),
    ("kafka.", "librdkafka property for both clients"),
];

const DEFAULT_COMMIT_INTERVAL_MS: u64 = 30_000;
const DEFAULT_EOS_COMMIT_INTERVAL_MS: u64 = 100;
const DEFAULT_CACHE_MAX_BYTES: u64 = 10 * 1024 * 1024;
const DEFAULT_CHANGELOG_AHEAD_BYTES: u64 = 1024 * 1024;
const DEFAULT_CHECKPOINT_TABLE_ENTRIES: u64 = 100_000;
const DEFAULT_MAX_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// The name the default `state.dir` gets under the system temp directory.
pub const DEFAULT_STATE_DIR_NAME: &str = "wasmstream";

/// A value before it is checked against its key.
#[derive(Debug, Clone)]
enum Raw {
    Toml(toml::Value),
    /// From a `--set KEY=VALUE` override.
    Text(String),
}

impl Raw {
    fn show(&self) -> String {
        match self {
            Raw::Toml(v) => v.to_string(),
            Raw::Text(s) => format!("{s:?}"),
        }
    }

    /// The value as a string, for keys whose values are strings (scalars are
    /// accepted and printed, as Kafka's properties would be).
    fn text(&self) -> Option<String> {
        match self {
            Raw::Text(s) => Some(s.clone()),
            Raw::Toml(toml::Value::String(s)) => Some(s.clone()),
            Raw::Toml(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => {
                Some(v.to_string())
            }
            Raw::Toml(_) => None,
        }
    }
}

/// Reads and validates a config file; `overrides` are `KEY=VALUE` strings that
/// replace or add keys (`--set`).
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, Some(path), &base, overrides)
}

/// Parses config text; relative paths resolve against `base`.
pub fn parse(text: &str, source: Option<&Path>, base: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    let origin = source.map_or_else(|| "configuration".to_string(), |p| p.display().to_string());
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigError::Syntax { origin: origin.clone(), message: e.to_string().trim().to_string() })?;
    let mut flat = BTreeMap::new();
    flatten("", table, &mut flat, &origin)?;
    for o in overrides {
        let (k, v) = o.split_once('=').ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
        flat.insert(k.trim().to_string(), Raw::Text(v.to_string()));
    }
    build(flat, source, base, &origin)
}

/// Turns nested tables into dotted keys, so that `commit.interval.ms = 1`,
/// `"commit.interval.ms" = 1` and `[commit] interval.ms = 1` are all one key.
fn flatten(prefix: &str, table: toml::Table, out: &mut BTreeMap<String, Raw>, origin: &str) -> Result<(), ConfigError> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out, origin)?,
            v => {
                if out.insert(key.clone(), Raw::Toml(v)).is_some() {
                    return Err(ConfigError::Duplicate { origin: origin.to_string(), key });
                }
            }
        }
    }
    Ok(())
}

fn closest(key: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| k.name)
        .chain(["processor.config.<name>", "kafka.<librdkafka property>"])
        .map(|name| (strsim::damerau_levenshtein(key, name), name))
        .filter(|(d, name)| *d <= (name.len() / 3).max(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

fn build(
    mut flat: BTreeMap<String, Raw>,
    source: Option<&Path>,
    base: &Path,
    origin: &str,
) -> Result<Config, ConfigError> {
    // Pass-through sections first, so that what is left must be a known key.
    let mut guest = Vec::new();
    let mut kafka = KafkaPassthrough::default();
    let keys: Vec<String> = flat.keys().cloned().collect();
    for key in keys {
        let Some((prefix, _)) = PASSTHROUGH.iter().find(|(p, _)| key.starts_with(p)) else { continue };
        let Some(raw) = flat.remove(&key) else { continue };
        let name = key[prefix.len()..].to_string();
        let value = raw.text().ok_or_else(|| ConfigError::BadValue {
            origin: origin.to_string(),
            key: key.clone(),
            value: raw.show(),
            expected: "a string, number or boolean".into(),
            suggestion: None,
        })?;
        match *prefix {
            "processor.config." => guest.push((name, value)),
            "kafka.consumer." => drop(kafka.consumer.insert(name, value)),
            "kafka.producer." => drop(kafka.producer.insert(name, value)),
            _ => drop(kafka.common.insert(name, value)),
        }
    }
    if let Some(key) = flat.keys().find(|k| !KEYS.iter().any(|known| known.name == k.as_str())) {
        return Err(ConfigError::UnknownKey { origin: origin.to_string(), key: key.clone(), suggestion: closest(key) });
    }

    let get = |name: &'static str| -> Result<Option<Value>, ConfigError> {
        let key = KEYS.iter().find(|k| k.name == name).expect("every key read is in KEYS");
        match flat.get(name) {
            None if key.default.is_none() => {
                Err(ConfigError::Missing { origin: origin.to_string(), key: name, doc: key.doc })
            }
            None => Ok(None),
            Some(raw) => check(key, raw, base).map(Some).map_err(|(expected, suggestion)| ConfigError::BadValue {
                origin: origin.to_string(),
                key: name.to_string(),
                value: raw.show(),
                expected,
                suggestion,
            }),
        }
    };

    let application_id = get("application.id")?.map(Value::text).unwrap_or_default();
    let bootstrap_servers = get("bootstrap.servers")?.map(Value::text).unwrap_or_default();
    let processing_guarantee = match get("processing.guarantee")? {
        Some(Value::Guarantee(g)) => g,
        _ => ProcessingGuarantee::AtLeastOnce,
    };
    let commit_interval_ms = match get("commit.interval.ms")? {
        Some(Value::Number(n)) => n,
        _ if processing_guarantee == ProcessingGuarantee::ExactlyOnce => DEFAULT_EOS_COMMIT_INTERVAL_MS,
        _ => DEFAULT_COMMIT_INTERVAL_MS,
    };
    let state_dir = match get("state.dir")? {
        Some(Value::Path(p)) => p,
        _ => std::env::temp_dir().join(DEFAULT_STATE_DIR_NAME),
    };
    let cache_max_bytes = get("statestore.cache.max.bytes")?.map_or(DEFAULT_CACHE_MAX_BYTES, Value::number);
    let changelog_ahead_bytes =
        get("statestore.changelog.ahead.bytes")?.map_or(DEFAULT_CHANGELOG_AHEAD_BYTES, Value::number);
    let checkpoint_table_entries =
        get("statestore.checkpoint.table.entries")?.map_or(DEFAULT_CHECKPOINT_TABLE_ENTRIES, Value::number);
    let replication_factor = match get("replication.factor")? {
        Some(Value::Replication(n)) => n,
        _ => -1,
    };
    let module = match get("processor.module")? {
        Some(Value::Path(p)) => p,
        _ => PathBuf::new(),
    };
    let inputs = get("processor.inputs")?.map(Value::topics).unwrap_or_default();
    let outputs = get("processor.outputs")?.map(Value::topics).unwrap_or_default();
    let max_memory_bytes = get("processor.max.memory.bytes")?.map_or(DEFAULT_MAX_MEMORY_BYTES, Value::number);
    let watch = matches!(get("processor.watch")?, Some(Value::Flag(true)));
    let admin_listen = match get("admin.listen")? {
        Some(Value::Listen(a)) => a,
        _ => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    };

    if !module.is_file() {
        return Err(ConfigError::ModuleNotFound { origin: origin.to_string(), path: module });
    }
    Ok(Config {
        source: source.map(Path::to_path_buf),
        application_id,
        bootstrap_servers,
        commit_interval: Duration::from_millis(commit_interval_ms),
        processing_guarantee,
        state_dir,
        cache_max_bytes,
        changelog_ahead_bytes,
        checkpoint_table_entries,
        replication_factor,
        processor: ProcessorConfig { module, inputs, outputs, config: guest, max_memory_bytes, watch },
        kafka,
        admin_listen,
    })
}

/// A checked value.
enum Value {
    Text(String),
    Replication(i32),
    Number(u64),
    Guarantee(ProcessingGuarantee),
    Path(PathBuf),
    Topics(Vec<String>),
    Listen(Option<std::net::SocketAddr>),
    Flag(bool),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Text(s) => s,
            _ => String::new(),
        }
    }
    fn number(self) -> u64 {
        match self {
            Value::Number(n) => n,
            _ => 0,
        }
    }
    fn topics(self) -> Vec<String> {
        match self {
            Value::Topics(t) => t,
            _ => Vec::new(),
        }
    }
}

/// Checks one value; the error is (what was expected, a suggestion).
fn check(key: &Key, raw: &Raw, base: &Path) -> Result<Value, (String, Option<&'static str>)> {
    match key.kind {
        Kind::Flag => match raw {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(Value::Flag(*b)),
            other => match other.text().as_deref().map(str::trim) {
                Some("true") => Ok(Value::Flag(true)),
                Some("false") => Ok(Value::Flag(false)),
                _ => Err(("true or false".into(), None)),
            },
        },
        Kind::Listen => match raw.text().map(|s| s.trim().to_string()) {
            Some(s) if s == "none" => Ok(Value::Listen(None)),
            Some(s) => s.parse().map(|a| Value::Listen(Some(a))).map_err(|_| {
                ("an IP address and port such as 127.0.0.1:9870 (port 0: any free one), or none".into(), None)
            }),
            None => Err(("an address string such as \"127.0.0.1:9870\", or \"none\"".into(), None)),
        },
        Kind::Text => match raw.text() {
            Some(s) if !s.trim().is_empty() => Ok(Value::Text(s)),
            _ => Err(("a non-empty string".into(), None)),
        },
        Kind::Replication => {
            let n = match raw {
                Raw::Toml(toml::Value::Integer(i)) => i32::try_from(*i).ok(),
                other => other.text().and_then(|s| s.trim().parse::<i32>().ok()),
            };
            match n {
                Some(n) if n == -1 || n >= 1 => Ok(Value::Replication(n)),
                _ => Err(("a whole number of replicas, at least 1, or -1 for the broker's default".into(), None)),
            }
        }
        Kind::Millis | Kind::Bytes | Kind::BytesOrOff | Kind::EntriesOrOff => {
            let n = match raw {
                Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
                other => other.text().and_then(|s| s.trim().parse::<u64>().ok()),
            };
            let (unit, off) = match key.kind {
                Kind::Millis => ("milliseconds", false),
                Kind::Bytes => ("bytes", false),
                Kind::BytesOrOff => ("bytes", true),
                _ => ("state entries", true),
            };
            match n {
                Some(n) if n > 0 || off => Ok(Value::Number(n)),
                _ if off => Err((format!("a whole number of {unit}, or 0 for never"), None)),
                _ => Err((format!("a positive whole number of {unit}"), None)),
            }
        }
        Kind::Guarantee => {
            let s = raw.text().unwrap_or_default();
            ProcessingGuarantee::parse(s.trim()).map(Value::Guarantee).ok_or_else(|| {
                let suggestion = ProcessingGuarantee::NAMES
                    .into_iter()
                    .map(|n| (strsim::damerau_levenshtein(&s, n), n))
                    .filter(|(d, _)| *d <= 5)
                    .min_by_key(|(d, _)| *d)
                    .map(|(_, n)| n);
                (format!("one of {}", ProcessingGuarantee::NAMES.join(", ")), suggestion)
            })
        }
        Kind::Path => match raw.text() {
            Some(s) if !s.trim().is_empty() => Ok(Value::Path(base.join(s.trim()))),
            _ => Err(("a path".into(), None)),
        },
        Kind::TopicList => {
            let topics: Option<Vec<String>> = match raw {
                Raw::Toml(toml::Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
                // One topic, or a comma-separated list (as in an override).
                other => other.text().map(|s| s.split(',').map(|t| t.trim().to_string()).collect()),
            };
            match topics {
                Some(t) if !t.is_empty() && t.iter().all(|t| valid_topic(t)) => Ok(Value::Topics(t)),
                _ => Err(("a non-empty list of topic names (letters, digits, '.', '_', '-')".into(), None)),
            }
        }
    }
}

/// Kafka's own rule for topic names.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The key table as text, for `wasmstream config-keys`.
pub fn describe_keys() -> String {
    let mut s = String::new();
    // The names' column, as wide as the longest name.
    let width =
        KEYS.iter().map(|k| k.name.len()).chain(PASSTHROUGH.iter().map(|(p, _)| p.len() + 1)).max().unwrap_or(0);
    for k in KEYS {
        let default = k.default.map_or_else(|| "required".to_string(), |d| format!("default {d}"));
        s.push_str(&format!("{:<width$} {} ({default})\n", k.name, k.doc));
    }
    for (p, doc) in PASSTHROUGH {
        s.push_str(&format!("{:<width$} {doc}\n", format!("{p}*")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_file() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().expect("temp file")
    }

    fn cfg(extra: &str, module: &Path) -> String {
        format!(
            "application.id = \"app\"\nbootstrap.servers = \"b:9092\"\n{extra}\n[processor]\nmodule = {:?}\ninputs = [\"in\"]\noutputs = [\"out\"]\n",
            module.display()
        )
    }

    fn err(text: &str) -> String {
        match parse(text, Some(Path::new("x.toml")), Path::new("/"), &[]) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_follow_kafka_streams() {
        let m = module_file();
        let c = parse(&cfg("", m.path()), None, Path::new("/"), &[]).expect("valid");
        assert_eq!(c.commit_interval, Duration::from_millis(30_000));
        assert_eq!(c.processing_guarantee, ProcessingGuarantee::AtLeastOnce);
        let c = parse(&cfg("processing.guarantee = \"exactly_once_v2\"", m.path()), None, Path::new("/"), &[])
            .expect("valid");
        assert_eq!(c.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        assert_eq!(c.commit_interval, Duration::from_millis(100));
    }

    #[test]
    fn quoted_bare_and_override_keys_are_the_same_key() {
        let m = module_file();
        let text = cfg("\"commit.interval.ms\" = 500\n[kafka]\nlinger.ms = 5\n", m.path());
        let c =
            parse(&text, None, Path::new("/"), &["state.dir=/s".into(), "processor.config.x=1".into()]).expect("valid");
        assert_eq!(c.commit_interval, Duration::from_millis(500));
        assert_eq!(c.kafka.common.get("linger.ms").map(String::as_str), Some("5"));
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        assert_eq!(c.processor.config, vec![("x".to_string(), "1".to_string())]);
        let dup = err(&cfg("\"commit.interval.ms\" = 1\ncommit.interval.ms = 2", m.path()));
        assert!(dup.contains("`commit.interval.ms` is set twice"), "{dup}");
    }

    /// Keys whose 0 means "never" take 0 (`statestore.changelog.ahead.bytes`
    /// refused it, though its doc and the README said 0 turns it off);
    /// the others still want a positive number, and each says which.
    #[test]
    fn zero_turns_off_the_keys_that_say_so() {
        let m = module_file();
        let c = parse(&cfg("", m.path()), None, Path::new("/"), &[]).expect("valid");
        assert_eq!((c.changelog_ahead_bytes, c.checkpoint_table_entries), (1 << 20, 100_000));
        let text = cfg(
            "statestore.changelog.ahead.bytes = 0
statestore.checkpoint.table.entries = 0",
            m.path(),
        );
        let c = parse(&text, None, Path::new("/"), &[]).expect("valid");
        assert_eq!((c.changelog_ahead_bytes, c.checkpoint_table_entries), (0, 0));
        let e = err(&cfg("statestore.checkpoint.table.entries = -1", m.path()));
        assert_eq!(
            e,
            "x.toml: bad value -1 for `statestore.checkpoint.table.entries`: expected a whole number of state entries, or 0 for never"
        );
        let e = err(&cfg("statestore.cache.max.bytes = 0", m.path()));
        assert_eq!(
            e,
            "x.toml: bad value 0 for `statestore.cache.max.bytes`: expected a positive whole number of bytes"
        );
    }

    #[test]
    fn unknown_key_names_key_and_closest() {
        let m = module_file();
        let e = err(&cfg("commit.interval = 5", m.path()));
        assert_eq!(e, "x.toml: unknown key `commit.interval` (did you mean `commit.interval.ms`?)");
    }

    #[test]
    fn bad_guarantee_names_key_value_choices_and_closest() {
        let m = module_file();
        let e = err(&cfg("processing.guarantee = \"at_least_one\"", m.path()));
        assert_eq!(
            e,
            "x.toml: bad value \"at_least_one\" for `processing.guarantee`: expected one of at_least_once, exactly_once, none (did you mean `at_least_once`?)"
        );
    }

    #[test]
    fn bad_numbers_topics_and_missing_keys_are_named() {
        let m = module_file();
        assert!(
            err(&cfg("commit.interval.ms = -5", m.path()))
                .contains("`commit.interval.ms`: expected a positive whole number")
        );
        assert!(err(&cfg("commit.interval.ms = \"soon\"", m.path())).contains("bad value \"soon\""));
        let text = cfg("", m.path()).replace("inputs = [\"in\"]", "inputs = [\"a b\"]");
        assert!(err(&text).contains("`processor.inputs`"));
        let text = cfg("", m.path()).replace("application.id = \"app\"\n", "");
        assert!(err(&text).starts_with("x.toml: `application.id` is required"));
    }

    #[test]
    fn admin_listen_and_processor_watch_default_and_are_checked() {
        let m = module_file();
        let c = parse(&cfg("", m.path()), None, Path::new("/"), &[]).expect("valid");
        assert_eq!(c.admin_listen, Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))));
        assert!(!c.processor.watch);
        let text = cfg("admin.listen = \"none\"", m.path()).replace("[processor]\n", "[processor]\nwatch = true\n");
        let c = parse(&text, None, Path::new("/"), &[]).expect("valid");
        assert_eq!(c.admin_listen, None);
        assert!(c.processor.watch);
        let e = err(&cfg("admin.listen = \"localhost\"", m.path()));
        assert!(e.contains("`admin.listen`") && e.contains("127.0.0.1:9870"), "{e}");
        let e = err(&cfg("", m.path()).replace("[processor]\n", "[processor]\nwatch = \"yes\"\n"));
        assert!(e.contains("`processor.watch`") && e.contains("true or false"), "{e}");
    }

    #[test]
    fn missing_module_names_the_file() {
        let e = err(&cfg("", Path::new("/nonexistent/p.wasm")));
        assert_eq!(e, "x.toml: `processor.module` = /nonexistent/p.wasm: no such file");
    }

    #[test]
    fn every_key_is_documented_in_key_table() {
        let d = describe_keys();
        for k in KEYS {
            assert!(d.contains(k.name));
        }
    }
}
