//! `dbMethod.redis`: `ZADD <device name> <timestamp ms> <DataModel JSON>`
//! (mapper-framework v1.22+, spec §4.7), one pipeline per batch, on one
//! multiplexed connection (`poolsize`/`minIdleConns` are accepted and not
//! needed). The password comes from `PASSWORD` (or `PASSWORD_FILE`).
//! Re-sending a batch is harmless: a sorted set holds each member once.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;

use super::SinkError;
use super::method::secret;
use super::target::Entry;

/// One Redis database.
pub(crate) struct RedisTarget {
    client: redis::Client,
    addr: String,
    conn: Option<MultiplexedConnection>,
}

impl RedisTarget {
    /// A client of database `db` at `addr` (`host:port`).
    pub(crate) fn new(addr: &str, db: i32) -> Result<Self, SinkError> {
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| {
                    SinkError::Config(format!("redis addr `{addr}`: bad port `{p}`"))
                })?,
            ),
            None => (addr, 6379),
        };
        if host.is_empty() || host.contains('/') {
            return Err(SinkError::Config(format!(
                "redis addr `{addr}`: expected host:port"
            )));
        }
        if db < 0 {
            return Err(SinkError::Config(format!("redis db {db} is negative")));
        }
        use redis::IntoConnectionInfo;
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(db));
        if let Some(p) = secret("PASSWORD").filter(|p| !p.is_empty()) {
            settings = settings.set_password(p);
        }
        let info = redis::ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()
            .map_err(|e| SinkError::Config(format!("redis addr `{addr}`: {e}")))?
            .set_redis_settings(settings);
        let client = redis::Client::open(info)
            .map_err(|e| SinkError::Config(format!("redis addr `{addr}`: {e}")))?;
        Ok(Self {
            client,
            addr: addr.to_owned(),
            conn: None,
        })
    }

    /// Adds `batch` in one pipeline.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| self.error(e))?;
                self.conn.insert(c)
            }
        };
        let mut pipe = redis::pipe();
        for e in batch {
            let r = &e.record;
            pipe.zadd(&r.device, r.data_model().to_string(), r.timestamp)
                .ignore();
        }
        let res = pipe.exec_async(conn).await;
        res.map_err(|e| {
            self.conn = None;
            self.error(e)
        })
    }

    fn error(&self, e: redis::RedisError) -> SinkError {
        let text = format!("redis {}: {e}", self.addr);
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            SinkError::Unreachable(text)
        } else {
            SinkError::Refused(text)
        }
    }
}
