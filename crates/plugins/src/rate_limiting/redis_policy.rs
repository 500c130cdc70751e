//! The `redis` policy: counters in Redis, shared by every node that points at it.
//!
//! One request is one round trip: a Lua script reads every period's counters, decides, and —
//! only when every period admits the request — increments them and sets their expiry. Redis
//! runs a script atomically, so concurrent requests from any number of nodes never pass more
//! than the limit (no read-modify-write from the gateway).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo, Script};
use tokio::sync::OnceCell;

use super::local::Limit;
use super::window::{sliding_weight, Observed};

/// KEYS: for period i (1-based) the current window's key at 2i-1 and the previous window's
/// at 2i. ARGV: 1 = number of periods, then per period: limit, ttl (s), previous weight.
const SCRIPT: &str = r"
local n = tonumber(ARGV[1])
local out = {0}
local admitted = 1
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 1])
  local weight = tonumber(ARGV[3 * i + 1])
  local cur = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local prev = 0
  if weight > 0 then
    prev = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  end
  out[2 * i] = cur
  out[2 * i + 1] = prev
  if cur + prev * weight + 1 > limit then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, n do
    local v = redis.call('INCR', KEYS[2 * i - 1])
    if v == 1 then
      redis.call('EXPIRE', KEYS[2 * i - 1], tonumber(ARGV[3 * i]))
    end
  end
end
out[1] = admitted
return out
";

/// Where and how to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user (Redis 6+).
    pub username: Option<String>,
    /// Password; never logged.
    pub password: Option<String>,
    /// Database number.
    pub database: i64,
    /// Connect with TLS.
    pub ssl: bool,
    /// Verify the server certificate and name when `ssl`.
    pub ssl_verify: bool,
    /// Connect and per-command timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("ssl", &self.ssl)
            .field("ssl_verify", &self.ssl_verify)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a Redis round trip failed (the message never holds the password).
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// Could not connect, or the command failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the timeout.
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    /// A recent connection attempt failed; not retried yet.
    #[error("redis unreachable (recent connection failure)")]
    Backoff,
    /// The script answered something unexpected.
    #[error("unexpected answer from redis")]
    Protocol,
}

/// After a failed connection attempt, requests do not try again for this long.
const RECONNECT_BACKOFF_MS: i64 = 1000;

/// A Redis-backed counter store; the connection is opened on first use and then shared.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
    script: Script,
    /// Epoch ms of the last failed connection attempt.
    failed_at: AtomicI64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares a client; nothing is connected until the first request.
    pub fn new(cfg: &RedisConfig) -> Result<RedisStore, redis::RedisError> {
        let addr = if cfg.ssl {
            ConnectionAddr::TcpTls {
                host: cfg.host.clone(),
                port: cfg.port,
                insecure: !cfg.ssl_verify,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(cfg.host.clone(), cfg.port)
        };
        let info = ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: cfg.database,
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                protocol: ProtocolVersion::RESP2,
            },
        };
        Ok(RedisStore {
            client: redis::Client::open(info)?,
            conn: OnceCell::new(),
            timeout: cfg.timeout,
            script: Script::new(SCRIPT),
            failed_at: AtomicI64::new(i64::MIN),
        })
    }

    async fn connection(&self, now_ms: i64) -> Result<ConnectionManager, RedisFailure> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        if now_ms.saturating_sub(self.failed_at.load(Ordering::Relaxed)) < RECONNECT_BACKOFF_MS {
            return Err(RedisFailure::Backoff);
        }
        let result = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout)
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await;
        match result {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                self.failed_at.store(now_ms, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Checks and (if admitted) counts one request. `keys` holds, per limit, the current and
    /// previous window keys; `starts` the current windows' starts (ms).
    pub async fn hit(
        &self,
        keys: &[(String, String)],
        limits: &[Limit],
        starts: &[i64],
        sliding: bool,
        now_ms: i64,
    ) -> Result<(Vec<Observed>, bool), RedisFailure> {
        let work = async {
            let mut conn = self.connection(now_ms).await?;
            let mut inv = self.script.prepare_invoke();
            inv.arg(limits.len());
            let mut weights = Vec::with_capacity(limits.len());
            for ((l, (cur, prev)), start) in limits.iter().zip(keys).zip(starts) {
                let len = l.period.seconds() * 1000;
                let weight = if sliding {
                    sliding_weight(now_ms, *start, len)
                } else {
                    0.0
                };
                let ttl = if sliding {
                    2 * l.period.seconds()
                } else {
                    l.period.seconds()
                };
                inv.key(cur).key(prev);
                inv.arg(l.limit).arg(ttl).arg(weight.to_string());
                weights.push(weight);
            }
            let answer: Vec<i64> = inv.invoke_async(&mut conn).await?;
            let admitted = match answer.first() {
                Some(1) => true,
                Some(0) => false,
                _ => return Err(RedisFailure::Protocol),
            };
            let mut observed = Vec::with_capacity(limits.len());
            for (i, (l, w)) in limits.iter().zip(weights).enumerate() {
                let (Some(cur), Some(prev)) = (answer.get(2 * i + 1), answer.get(2 * i + 2)) else {
                    return Err(RedisFailure::Protocol);
                };
                observed.push(Observed {
                    period: l.period,
                    limit: l.limit,
                    current: u64::try_from(*cur).unwrap_or(0),
                    previous: u64::try_from(*prev).unwrap_or(0),
                    weight: w,
                });
            }
            Ok((observed, admitted))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        }
    }
}
