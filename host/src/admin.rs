//! The admin endpoint of a running host: plain HTTP/1.1 on `admin.listen`
//! (127.0.0.1 and a free port unless configured), one JSON body per answer.
//!
//! - `GET /status`: application, module, tasks, records, checkpoints, the
//!   last hot swap.
//! - `POST /swap` with `{"module": "/path/new.wasm"}`: compiles the module on
//!   the admin thread (the pipeline keeps running), hands it to the
//!   processing loop, and answers with the swap's outcome (see
//!   [`crate::swap`]) once every task runs it or it rolled back.
//!
//! The bound address is written to `<state.dir>/<application.id>/admin.addr`,
//! where `wasmstream status` and `wasmstream swap` find it. There is no
//! authentication: keep it on the loopback interface.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::compiled::CompileCache;
use crate::config::Config;
use crate::guest::{self, Module};
use crate::pipeline::Progress;
use crate::swap::{self, SwapInbox, SwapOutcome, SwapRequest};
use crate::task::short;

/// The file holding the admin endpoint's address, under the application's state directory.
pub const ADDR_FILE: &str = "admin.addr";

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on admin.listen = {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    AddrFile { path: PathBuf, source: std::io::Error },
    #[error(
        "no running host found for application `{application_id}`: {path} is missing (is `wasmstream run` running with this config, and admin.listen not none?)"
    )]
    NotRunning { application_id: String, path: PathBuf },
    #[error("admin.listen = none in {0}: the host has no admin endpoint")]
    Disabled(String),
    #[error("cannot reach the host's admin endpoint at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the host's admin endpoint at {addr} answered badly: {message}")]
    Protocol { addr: String, message: String },
}

/// What the admin threads share with the pipeline.
pub struct AdminContext<'a> {
    pub config: &'a Config,
    pub progress: &'a Progress,
    pub inbox: &'a SwapInbox,
    pub engine: wasmtime::Engine,
    pub cache: CompileCache,
    /// SHA-256 of `processor.module` as configured.
    pub configured_digest: String,
}

/// A bound admin endpoint.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr_file: PathBuf,
}

impl Listener {
    /// Binds `addr` and writes the bound address to the state directory.
    pub fn bind(addr: SocketAddr, app_state_dir: &Path) -> Result<Listener, AdminError> {
        let listener = TcpListener::bind(addr).map_err(|source| AdminError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| AdminError::Bind { addr, source })?;
        let addr_file = app_state_dir.join(ADDR_FILE);
        std::fs::write(&addr_file, format!("{bound}\n"))
            .map_err(|source| AdminError::AddrFile { path: addr_file.clone(), source })?;
        if !bound.ip().is_loopback() {
            tracing::warn!(
                "the admin endpoint listens on {bound}, not a loopback address: anyone who reaches it can swap the processor"
            );
        }
        tracing::info!("admin endpoint on http://{bound} (GET /status, POST /swap)");
        Ok(Listener { listener, addr_file })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers requests until `stop`; each connection on its own thread.
    pub fn serve(&self, ctx: &AdminContext<'_>, stop: &AtomicBool) {
        std::thread::scope(|s| {
            while !stop.load(Ordering::Acquire) {
                match self.listener.accept() {
                    Ok((conn, _)) => {
                        let _ = s.spawn(|| {
                            if let Err(e) = handle(conn, ctx) {
                                tracing::debug!("admin connection: {e}");
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!("admin endpoint: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        });
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

/// The longest request the endpoint reads.
const MAX_REQUEST: u64 = 64 * 1024;

fn handle(conn: TcpStream, ctx: &AdminContext<'_>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new((&conn).take(MAX_REQUEST));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length.min(MAX_REQUEST as usize)];
    reader.read_exact(&mut body)?;
    let (code, json) = match (method.as_str(), path.as_str()) {
        ("GET", "/status") => (200, status(ctx)),
        ("POST", "/swap") => {
            let outcome = match serde_json::from_slice::<SwapBody>(&body) {
                Ok(b) => swap(ctx, Path::new(&b.module), None),
                Err(e) => SwapOutcome::Refused { reason: format!("the body must be {{\"module\": \"<path>\"}}: {e}") },
            };
            let code = match &outcome {
                SwapOutcome::Completed { .. } => 200,
                SwapOutcome::RolledBack { .. } => 422,
                SwapOutcome::Refused { .. } => 409,
            };
            (code, serde_json::to_value(&outcome).unwrap_or_default())
        }
        _ => (404, serde_json::json!({ "error": format!("no {method} {path}; try GET /status or POST /swap") })),
    };
    let body = serde_json::to_vec_pretty(&json).unwrap_or_default();
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Unprocessable Entity",
    };
    let mut out = &conn;
    write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

#[derive(Deserialize)]
struct SwapBody {
    module: String,
}

fn status(ctx: &AdminContext<'_>) -> serde_json::Value {
    let p = ctx.progress;
    let (module, digest, tasks) = p.running();
    serde_json::json!({
        "application_id": ctx.config.application_id,
        "processing_guarantee": ctx.config.processing_guarantee.as_str(),
        "module": module,
        "module_digest": digest,
        "configured_module": ctx.config.processor.module,
        "tasks": tasks,
        "records": p.records(),
        "checkpoints": p.checkpoints(),
        "last_swap": p.last_swap(),
    })
}

/// One swap, from the request to its outcome. `replaces`: the digest a
/// restart's `processor.module` must still have for the swapped-in module to
/// replace it (`None`: the configured module's at the start).
fn swap(ctx: &AdminContext<'_>, path: &Path, replaces: Option<&str>) -> SwapOutcome {
    if !ctx.inbox.begin() {
        return SwapOutcome::Refused { reason: "another hot swap is under way; try again when it is done".into() };
    }
    let outcome = swap_claimed(ctx, path, replaces.unwrap_or(&ctx.configured_digest));
    ctx.inbox.end();
    ctx.progress.set_last_swap(&outcome);
    outcome
}

fn swap_claimed(ctx: &AdminContext<'_>, path: &Path, replaces: &str) -> SwapOutcome {
    let requested = Instant::now();
    tracing::info!("hot swap requested: {}", path.display());
    let (running_path, running, _) = ctx.progress.running();
    let rolled_back = |reason: String| {
        tracing::warn!("hot swap rolled back before it reached the tasks, which run {running_path} on: {reason}");
        SwapOutcome::RolledBack { module: running_path.clone(), reason }
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return rolled_back(format!("cannot read {}: {e}", path.display())),
    };
    let max_memory = ctx.config.processor.max_memory_bytes;
    // The module, its digest and its stored copy all come from these bytes,
    // even if the file is replaced meanwhile.
    let module = match Module::from_bytes(&ctx.engine, path, &bytes, max_memory, Some(&ctx.cache)) {
        Ok(m) => m,
        Err(e) => return rolled_back(format!("the new module was not loaded, nothing changed: {e}")),
    };
    if module.digest == running {
        return SwapOutcome::Refused {
            reason: format!(
                "{} (sha256 {}) is the module every task runs already",
                path.display(),
                short(&module.digest)
            ),
        };
    }
    let compile = requested.elapsed();
    tracing::info!(
        "hot swap: loaded {} (sha256 {}) in {:.1} ms ({}), off the processing path",
        path.display(),
        short(&module.digest),
        swap::ms(compile),
        module.origin
    );
    let stored = match swap::store_module(&ctx.config.app_state_dir(), &module.digest, &bytes) {
        Ok(p) => p,
        Err(e) => return rolled_back(format!("nothing changed: {e}")),
    };
    let (reply, outcome) = std::sync::mpsc::channel();
    ctx.inbox.submit(SwapRequest {
        module,
        source: path.to_path_buf(),
        stored,
        compile,
        replaces: replaces.to_string(),
        requested,
        reply,
    });
    outcome.recv().unwrap_or_else(|_| SwapOutcome::RolledBack {
        module: running_path.clone(),
        reason: "the host stopped before the swap was done; a restart runs the module of its last completed swap, or processor.module".into(),
    })
}

/// How often `processor.watch` looks at the module file.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// How long the file must stay the same before it is swapped in.
const WATCH_SETTLE: Duration = Duration::from_secs(1);

/// `processor.watch`: swaps `processor.module` in whenever the file changes
/// (its size, modification time or inode: a replacing rename counts) and
/// then stays the same for [`WATCH_SETTLE`]. A version that failed is not
/// tried again until the file changes once more. Until `stop`.
pub fn watch(ctx: &AdminContext<'_>, stop: &AtomicBool) {
    let path = &ctx.config.processor.module;
    tracing::info!("processor.watch: watching {} for a new version", path.display());
    let mut seen = stamp(path);
    let mut changed_at: Option<Instant> = None;
    let mut failed: Option<String> = None;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(WATCH_POLL);
        let now = stamp(path);
        if now != seen {
            seen = now;
            changed_at = Some(Instant::now());
            continue;
        }
        if changed_at.is_none_or(|t| t.elapsed() < WATCH_SETTLE) {
            continue;
        }
        changed_at = None;
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("processor.watch: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let digest = guest::digest(&bytes);
        if digest == ctx.progress.running().1 || failed.as_deref() == Some(digest.as_str()) {
            continue;
        }
        tracing::info!("processor.watch: {} changed (sha256 {})", path.display(), short(&digest));
        // The file is processor.module itself: a restart runs it anyway.
        let outcome = swap(ctx, path, Some(&digest));
        failed = (!outcome.is_completed()).then_some(digest);
    }
}

/// What tells a file's versions apart without reading it.
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Where the running host of `config` listens.
pub fn find(config: &Config) -> Result<String, AdminError> {
    match config.admin_listen {
        None => Err(AdminError::Disabled(config.origin())),
        Some(addr) if addr.port() != 0 => Ok(addr.to_string()),
        Some(_) => {
            let path = config.app_state_dir().join(ADDR_FILE);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|_| AdminError::NotRunning { application_id: config.application_id.clone(), path })
        }
    }
}

/// One request to an admin endpoint: the status code and the JSON body.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), AdminError> {
    let connect = |source| AdminError::Connect { addr: addr.to_string(), source };
    let protocol = |message: String| AdminError::Protocol { addr: addr.to_string(), message };
    let mut conn = TcpStream::connect(addr).map_err(connect)?;
    conn.set_read_timeout(Some(timeout)).map_err(connect)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(connect)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).map_err(connect)?;
    let (head, json) = answer.split_once("\r\n\r\n").ok_or_else(|| protocol("no end of headers".into()))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| protocol(format!("no status in {:?}", head.lines().next())))?;
    let json = serde_json::from_str(json).map_err(|e| protocol(format!("body is not JSON: {e}")))?;
    Ok((code, json))
}
