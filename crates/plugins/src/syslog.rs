//! `syslog` (Kong's plugin): Kong's serialized log entry as a syslog message, with a severity
//! chosen by the response status (`successful_severity` below 400, `client_errors_severity`
//! for 4xx, `server_errors_severity` for 5xx) and written only when that severity is at least
//! as severe as `log_level`. The tag is `kong`, as Kong's, so existing syslog rules still match.
//!
//! Kong writes through the C library to the local syslog socket. Here the message is an RFC
//! 3164 line (`<PRI>Mmm dd hh:mm:ss kong[pid]: {json}`, UTC) sent as a datagram to `/dev/log`.
//! Extensions: `path` names another local socket, `host`/`port` send to a remote syslog
//! server over UDP instead (the line then carries the host name), and `format: rfc5424`
//! writes RFC 5424 lines (`<PRI>1 2024-05-01T12:00:00.000Z host kong pid - - {json}`).
//! Messages larger than one datagram (65 507 bytes) are dropped and counted.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_config::{Errors, Obj};
use serde_json::Value;
use tokio::net::UnixDatagram;
use tokio::sync::Mutex;

use crate::sink::{self, CustomFields, Deliver, Sink, MAX_DATAGRAM};
use crate::udp_log::{datagram_queue, UdpTarget};
use crate::{LogEntry, Plugin};

const SEVERITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// A compiled `syslog` instance.
pub struct Syslog {
    sink: Arc<Sink>,
    custom: CustomFields,
    facility: u8,
    log_level: u8,
    ok: u8,
    client_errors: u8,
    server_errors: u8,
    rfc5424: bool,
    /// Host name written in the line (remote servers only, and always in RFC 5424).
    hostname: Option<String>,
}

struct LocalSocket {
    path: String,
    socket: Mutex<Option<UnixDatagram>>,
}

impl Deliver for LocalSocket {
    async fn deliver(&self, batch: &[String]) -> Result<(), String> {
        let mut guard = self.socket.lock().await;
        let socket = match guard.take() {
            Some(s) => s,
            None => UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?,
        };
        for line in batch {
            socket
                .send_to(line.as_bytes(), &self.path)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        *guard = Some(socket);
        Ok(())
    }
}

enum Target {
    Local(LocalSocket),
    Udp(UdpTarget),
}

impl Deliver for Target {
    async fn deliver(&self, batch: &[String]) -> Result<(), String> {
        match self {
            Target::Local(t) => t.deliver(batch).await,
            Target::Udp(t) => t.deliver(batch).await,
        }
    }
}

fn severity(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> u8 {
    let s = o.one_of(key, "info", SEVERITIES, errs);
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(6) as u8
}

/// This machine's host name (for remote servers), without spaces.
pub(crate) fn hostname() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().replace(char::is_whitespace, "-"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3164 (`Mmm dd hh:mm:ss`) or RFC 5424 (`YYYY-MM-DDThh:mm:ss.mmmZ`) time stamp, UTC.
fn timestamp(t: Duration, rfc5424: bool) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.as_secs() as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    if rfc5424 {
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
            t.subsec_millis()
        )
    } else {
        let month = MONTHS[(m as usize).saturating_sub(1) % 12];
        format!("{month} {d:>2} {hh:02}:{mm:02}:{ss:02}")
    }
}

impl Syslog {
    /// Validates the config; when `start`, starts or shares the destination's queue.
    pub fn build(config: &Value, path: &str, errs: &mut Errors, start: bool) -> Option<Syslog> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let log_level = severity(&mut o, "log_level", errs);
        let ok = severity(&mut o, "successful_severity", errs);
        let client_errors = severity(&mut o, "client_errors_severity", errs);
        let server_errors = severity(&mut o, "server_errors_severity", errs);
        let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
        let facility = o.one_of("facility", "user", &names, errs);
        let facility = FACILITIES
            .iter()
            .find(|(n, _)| *n == facility)
            .map_or(1, |(_, f)| *f);
        let rfc5424 = o.one_of("format", "rfc3164", &["rfc3164", "rfc5424"], errs) == "rfc5424";
        let (remote, socket_path) = (o.has("host") || o.has("port"), o.has("path"));
        let (mut host, mut port) = (None, None);
        if remote {
            (host, port) = crate::tcp_log::host_port(&mut o, errs);
        }
        let timeout = o.int_or("timeout", 10_000, 1, 86_400_000, errs);
        let ppath = o.field_path("path");
        let local = o.opt_str("path", errs).unwrap_or_else(|| DEV_LOG.into());
        if socket_path && remote {
            errs.push(&ppath, "set either path or host and port");
        } else if !local.starts_with('/') {
            errs.push(&ppath, "must be an absolute path");
        }
        let custom = CustomFields::read(&mut o, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let mut plugin = Syslog {
            sink: Arc::new(Sink::disabled()),
            custom,
            facility,
            log_level,
            ok,
            client_errors,
            server_errors,
            rfc5424,
            hostname: (remote || rfc5424).then(|| hostname().to_string()),
        };
        if !start {
            return Some(plugin);
        }
        let (target, dest) = match (host, port) {
            (Some(h), Some(p)) => (
                Target::Udp(UdpTarget {
                    host: h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    port: p,
                    timeout: Duration::from_millis(timeout as u64),
                    socket: Mutex::new(None),
                }),
                format!("udp://{h}:{p}"),
            ),
            _ => (
                Target::Local(LocalSocket {
                    path: local.clone(),
                    socket: Mutex::new(None),
                }),
                format!("unix://{local}"),
            ),
        };
        let shared = sink::shared(format!("syslog {dest}"), || {
            Sink::start("syslog", dest, datagram_queue(), Some(MAX_DATAGRAM), target)
                .map_err(|e| e.to_string())
        });
        plugin.sink = sink::started(shared, path, errs)?;
        Some(plugin)
    }

    /// The syslog line for `entry`, or `None` when its severity is below `log_level`.
    fn line(&self, entry: &LogEntry, now: Duration) -> Option<String> {
        let severity = match entry.status {
            500.. => self.server_errors,
            400..=499 => self.client_errors,
            _ => self.ok,
        };
        if severity > self.log_level {
            return None;
        }
        let pri = u16::from(self.facility) * 8 + u16::from(severity);
        let msg = self.custom.serialize(entry);
        let pid = std::process::id();
        let ts = timestamp(now, self.rfc5424);
        Some(match (&self.hostname, self.rfc5424) {
            (Some(h), true) => format!("<{pri}>1 {ts} {h} kong {pid} - - {msg}"),
            (None, true) => format!("<{pri}>1 {ts} - kong {pid} - - {msg}"),
            (Some(h), false) => format!("<{pri}>{ts} {h} kong[{pid}]: {msg}"),
            (None, false) => format!("<{pri}>{ts} kong[{pid}]: {msg}"),
        })
    }
}

impl Plugin for Syslog {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn has_log(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if let Some(line) = self.line(entry, now) {
            self.sink.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(cfg: Value) -> Syslog {
        let mut errs = Errors::default();
        Syslog::build(&cfg, "p", &mut errs, false).unwrap_or_else(|| panic!("{errs:?}"))
    }

    #[test]
    fn severity_by_status_and_level() {
        let s = build(
            json!({"server_errors_severity": "err", "client_errors_severity": "debug",
            "successful_severity": "notice", "facility": "local0"}),
        );
        let t = Duration::from_secs(1_714_564_800); // 2024-05-01T12:00:00Z
        let e = |status| LogEntry {
            status,
            scheme: "http",
            ..Default::default()
        };
        let ok = s.line(&e(200), t).unwrap();
        assert!(ok.starts_with("<133>May  1 12:00:00 kong["), "{ok}");
        assert!(s.line(&e(503), t).unwrap().starts_with("<131>"));
        // debug is below the default log_level info.
        assert!(s.line(&e(404), t).is_none());
        let json_part = ok.split_once("]: ").unwrap().1;
        assert_eq!(
            serde_json::from_str::<Value>(json_part).unwrap()["response"]["status"],
            200
        );
    }

    #[test]
    fn rfc5424_lines_and_dates() {
        let s = build(json!({"format": "rfc5424", "host": "127.0.0.1", "port": 514}));
        let t = Duration::from_millis(951_782_400_123); // 2000-02-29T00:00:00.123Z
        let l = s
            .line(
                &LogEntry {
                    status: 200,
                    scheme: "http",
                    ..Default::default()
                },
                t,
            )
            .unwrap();
        assert!(l.starts_with("<14>1 2000-02-29T00:00:00.123Z "), "{l}");
        assert!(l.contains(" kong "), "{l}");
        assert_eq!(timestamp(Duration::from_secs(0), false), "Jan  1 00:00:00");
    }

    #[test]
    fn config_errors() {
        let mut errs = Errors::default();
        let cfg =
            json!({"log_level": "loud", "facility": "local9", "host": "h", "path": "/x", "y": 1});
        assert!(Syslog::build(&cfg, "p", &mut errs, false).is_none());
        let e: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        for want in [
            "p.log_level",
            "p.facility",
            "p.port: required",
            "p.path",
            "p.y",
        ] {
            assert!(e.iter().any(|e| e.starts_with(want)), "{want}: {e:?}");
        }
    }
}
