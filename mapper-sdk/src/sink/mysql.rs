//! `dbMethod.mysql` (MySQL and MariaDB): mapper-framework's layout (spec
//! §4.7), one table per property named `` `<ns>/<device>/<property>` `` with
//! `id INT AUTO_INCREMENT PRIMARY KEY, ts DATETIME NOT NULL, field TEXT`,
//! created if absent; `ts` is the reading's time in UTC, `field` the value
//! text. The password comes from `PASSWORD` (or `PASSWORD_FILE`). Each batch
//! is one transaction, so a failed batch leaves no partial rows behind.

use std::collections::HashSet;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, TxOpts, Value};

use super::SinkError;
use super::method::secret;
use super::target::Entry;

/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 200;

/// The table of a record, backquoted (backquotes inside doubled).
fn table(ns: &str, device: &str, property: &str) -> String {
    format!(
        "`{}`",
        format!("{ns}/{device}/{property}").replace('`', "``")
    )
}

/// One database.
pub(crate) struct MysqlTarget {
    pool: Pool,
    label: String,
    created: HashSet<String>,
}

impl MysqlTarget {
    /// A client of `database` at `addr` (`host:port`) as `user`.
    pub(crate) fn new(addr: &str, database: &str, user: &str) -> Result<Self, SinkError> {
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().map_err(|_| {
                    SinkError::Config(format!("mysql addr `{addr}`: bad port `{p}`"))
                })?,
            ),
            None => (addr, 3306),
        };
        if host.is_empty() {
            return Err(SinkError::Config(format!("mysql addr `{addr}`: no host")));
        }
        if database.trim().is_empty() {
            return Err(SinkError::Config("mysql database is empty".into()));
        }
        let opts = OptsBuilder::default()
            .ip_or_hostname(host)
            .tcp_port(port)
            .user(Some(user))
            .pass(secret("PASSWORD"))
            .db_name(Some(database));
        Ok(Self {
            pool: Pool::new(opts),
            label: format!("mysql {user}@{addr}/{database}"),
            created: HashSet::new(),
        })
    }

    /// Writes `batch` in one transaction.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        let label = self.label.clone();
        let err = |e: mysql_async::Error| {
            let text = format!("{label}: {e}");
            match e {
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
                    SinkError::Unreachable(text)
                }
                _ => SinkError::Refused(text),
            }
        };
        // Group by table, keeping each table's rows in order.
        let mut tables: Vec<(String, Vec<&Entry>)> = Vec::new();
        for e in batch {
            let r = &e.record;
            let t = table(&r.namespace, &r.device, &r.property);
            match tables.iter_mut().find(|(n, _)| *n == t) {
                Some((_, rows)) => rows.push(e),
                None => tables.push((t, vec![e])),
            }
        }
        let mut conn = self.pool.get_conn().await.map_err(err)?;
        for (t, _) in &tables {
            if !self.created.contains(t) {
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {t} (id INT AUTO_INCREMENT PRIMARY KEY, ts DATETIME NOT NULL, field TEXT)"
                ))
                .await
                .map_err(err)?;
                self.created.insert(t.clone());
            }
        }
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(err)?;
        for (t, rows) in &tables {
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let mut sql = format!("INSERT INTO {t} (ts, field) VALUES ");
                let mut params = Vec::with_capacity(chunk.len() * 2);
                for (i, e) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push_str("(?,?)");
                    params.push(Value::from(e.record.datetime()));
                    params.push(Value::from(e.record.value.as_str()));
                }
                tx.exec_drop(sql, params).await.map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_names_are_quoted() {
        assert_eq!(
            super::table("default", "pump", "temp"),
            "`default/pump/temp`"
        );
        assert_eq!(super::table("n", "a`b", "p"), "`n/a``b/p`");
    }
}
