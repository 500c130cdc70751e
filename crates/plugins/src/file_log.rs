//! `file-log` (Kong's plugin): one JSON line per request, in Kong's serialized log format,
//! appended to a file.
//!
//! Lines are written by one background thread per file through a bounded queue, so a slow
//! disk never slows the proxy; lines that do not fit are counted (and reported in the log),
//! never silently lost. The file is reopened after `SIGUSR1` (for logrotate: see
//! [`reopen_all`]) and, with `reopen: true`, before every batch. `custom_fields_by_lua` has no
//! place here: `custom_fields` adds static fields (dotted names nest).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::{LogEntry, Plugin};

const QUEUE: usize = 16 * 1024;

/// Bumped by SIGUSR1: writers reopen their file before the next batch.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every file-log writer to reopen its file (logrotate's `postrotate` sends SIGUSR1).
pub fn reopen_all() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// One writer thread per file path, shared by every instance (and config) naming it.
struct Writer {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

type Writers = Mutex<HashMap<(PathBuf, bool), Arc<Writer>>>;

fn writers() -> &'static Writers {
    static W: OnceLock<Writers> = OnceLock::new();
    W.get_or_init(|| Mutex::new(HashMap::new()))
}

fn open(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn writer_for(path: PathBuf, reopen: bool) -> std::io::Result<Arc<Writer>> {
    let mut map = writers()
        .lock()
        .map_err(|_| std::io::Error::other("writer table poisoned"))?;
    if let Some(w) = map.get(&(path.clone(), reopen)) {
        return Ok(w.clone());
    }
    // Fail at load, not at the first request, when the file cannot be opened.
    let file = open(&path)?;
    let (tx, rx) = sync_channel::<String>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread_path = path.clone();
    let thread_dropped = dropped.clone();
    std::thread::Builder::new()
        .name("file-log".into())
        .spawn(move || write_loop(rx, thread_path, file, reopen, thread_dropped))?;
    let w = Arc::new(Writer { tx, dropped });
    map.insert((path, reopen), w.clone());
    Ok(w)
}

fn write_loop(
    rx: Receiver<String>,
    path: PathBuf,
    file: std::fs::File,
    reopen: bool,
    dropped: Arc<AtomicU64>,
) {
    let mut generation = GENERATION.load(Ordering::Relaxed);
    let mut out = std::io::BufWriter::new(file);
    let mut reported = 0;
    while let Ok(first) = rx.recv() {
        let now = GENERATION.load(Ordering::Relaxed);
        if reopen || now != generation {
            generation = now;
            let _ = out.flush();
            match open(&path) {
                Ok(f) => out = std::io::BufWriter::new(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "file-log: cannot reopen")
                }
            }
        }
        let _ = writeln!(out, "{first}");
        while let Ok(more) = rx.try_recv() {
            let _ = writeln!(out, "{more}");
        }
        let _ = out.flush();
        let lost = dropped.load(Ordering::Relaxed);
        if lost != reported {
            tracing::warn!(path = %path.display(), dropped = lost, "file-log: queue full, lines dropped");
            reported = lost;
        }
    }
}

/// A compiled `file-log` instance.
pub struct FileLog {
    writer: Arc<Writer>,
    custom: crate::sink::CustomFields,
}

impl FileLog {
    /// Validates the config and opens (or shares) the file's writer.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        open_files: bool,
    ) -> Option<FileLog> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let has_path = o.has("path");
        let file = o.opt_str("path", errs);
        if !has_path {
            errs.push(o.field_path("path"), "required field missing");
        }
        if let Some(f) = &file {
            let ok = f.starts_with('/')
                && !f.contains("..")
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
            if !ok {
                errs.push(
                    o.field_path("path"),
                    "must be an absolute path of letters, digits, '/', '.', '_' and '-' (no '..')",
                );
            }
        }
        let reopen = o.bool_or("reopen", false, errs);
        let custom = crate::sink::CustomFields::read(&mut o, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let file = PathBuf::from(file?);
        let writer = if open_files {
            match writer_for(file.clone(), reopen) {
                Ok(w) => w,
                Err(e) => {
                    errs.push(format!("{path}.path"), format!("cannot open: {e}"));
                    return None;
                }
            }
        } else {
            // Schema-only check: a writer that is never used.
            let (tx, _rx) = sync_channel(1);
            Arc::new(Writer {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            })
        };
        Some(FileLog { writer, custom })
    }
}

/// Sets `value` at a dotted path inside a JSON object.
pub fn set_path(target: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = target;
    for p in parents {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p.as_str()] = Value::Object(Default::default());
        }
        cur = &mut cur[p.as_str()];
    }
    cur[last.as_str()] = value;
}

impl Plugin for FileLog {
    fn name(&self) -> &'static str {
        "file-log"
    }

    fn has_log(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        match self.writer.tx.try_send(self.custom.serialize(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.writer.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors() {
        let mut errs = Errors::default();
        let cfg =
            json!({"path": "../etc/passwd", "custom_fields_by_lua": {"x": "return 1"}, "y": 1});
        assert!(FileLog::build(&cfg, "p.config", &mut errs, false).is_none());
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|e| e.contains("p.config.path")), "{text:?}");
        assert!(
            text.iter()
                .any(|e| e.contains("p.config.custom_fields_by_lua")),
            "{text:?}"
        );
        assert!(text.iter().any(|e| e.contains("p.config.y")), "{text:?}");
    }

    #[test]
    fn dotted_custom_fields_nest() {
        let mut v = json!({"request": {"method": "GET"}});
        set_path(
            &mut v,
            &["request".into(), "team".into()],
            json!("payments"),
        );
        set_path(&mut v, &["env".into()], json!("prod"));
        assert_eq!(
            v,
            json!({"request": {"method": "GET", "team": "payments"}, "env": "prod"})
        );
    }
}
