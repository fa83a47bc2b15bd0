//! What the trigger asks of and sets up in PostgreSQL before it streams: the settings and
//! privileges logical decoding needs, the tables, the publication, the slot. Every refusal
//! names the setting or object and the statement that fixes it.
//!
//! These statements go over a plain (not replication) connection of `pg_walstream`, the
//! same client the stream uses, so both speak TLS and authenticate alike.

use anyhow::{bail, Context as _};
use pg_walstream::{PgReplicationConnection, PgResult};
use tracing::info;

use super::config::{quote_ident, quote_literal, Operation, TableName};

/// A connection string with extra libpq keywords added, in the form it was written.
pub fn with_params(dsn: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let mut url = url::Url::parse(dsn).context("the dsn is not a valid URI")?;
        let present: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in params.iter().filter(|(k, _)| !present.iter().any(|p| p == k)) {
                query.append_pair(key, value);
            }
        }
        Ok(url.into())
    } else {
        let mut text = dsn.to_owned();
        for (key, value) in params {
            if !dsn.split_whitespace().any(|part| part.starts_with(&format!("{key}="))) {
                text.push_str(&format!(" {key}={value}"));
            }
        }
        Ok(text)
    }
}

/// A plain SQL connection.
pub struct Catalog {
    connection: PgReplicationConnection,
    /// `host:port/database`, for messages.
    pub server: String,
}

impl Catalog {
    /// Connects within `connect_timeout` seconds (unless the dsn sets its own).
    pub fn connect(dsn: &str, server: &str, connect_timeout: u32) -> anyhow::Result<Self> {
        let conninfo = with_params(dsn, &[("connect_timeout", &connect_timeout.to_string())])?;
        let connection = PgReplicationConnection::connect(&conninfo)
            .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL at {server}: {e}"))?;
        Ok(Self { connection, server: server.to_owned() })
    }

    fn query(&mut self, sql: &str) -> anyhow::Result<PgResult> {
        self.connection.exec(sql).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Runs statements whose answer does not matter.
    pub fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        self.query(sql).map(drop)
    }

    /// The first column of each row (NULL as "").
    fn column(&mut self, sql: &str) -> anyhow::Result<Vec<String>> {
        let result = self.query(sql)?;
        Ok((0..result.ntuples()).map(|row| result.get_value(row, 0).unwrap_or_default()).collect())
    }

    /// One row, its columns as text (NULL as ""), or `None`.
    fn row(&mut self, sql: &str) -> anyhow::Result<Option<Vec<String>>> {
        let result = self.query(sql)?;
        if result.ntuples() == 0 {
            return Ok(None);
        }
        Ok(Some((0..result.nfields()).map(|col| result.get_value(0, col).unwrap_or_default()).collect()))
    }

    /// `wal_level = logical`, and a role allowed to stream.
    pub fn check_server(&mut self) -> anyhow::Result<()> {
        let level = self.column("SHOW wal_level")?.pop().unwrap_or_default();
        if level != "logical" {
            bail!(
                "PostgreSQL at {} has wal_level = {level}, and logical decoding needs wal_level = logical: \
                 run `ALTER SYSTEM SET wal_level = logical;` as a superuser and restart PostgreSQL (a reload is not enough)",
                self.server
            );
        }
        let role = self
            .row("SELECT current_user, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")?
            .unwrap_or_default();
        if let [user, superuser, replication] = &role[..] {
            if superuser != "t" && replication != "t" {
                bail!(
                    "role {user} may not stream changes from {}: it needs the REPLICATION attribute \
                     (`ALTER ROLE {} WITH REPLICATION;`, as a superuser)",
                    self.server,
                    quote_ident(user)
                );
            }
        }
        Ok(())
    }

    /// Each table exists, is a table, and can publish the changes asked for; what the
    /// decoder needs to know of each.
    pub fn check_tables(&mut self, tables: &[TableName], operations: &[Operation]) -> anyhow::Result<Vec<TableInfo>> {
        let old_rows = operations.iter().any(|op| matches!(op, Operation::Update | Operation::Delete));
        let mut infos = Vec::new();
        for table in tables {
            let sql = format!(
                "SELECT c.relkind, c.relreplident, \
                        coalesce((SELECT array_to_json(array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)))::text \
                                  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                                  WHERE i.indrelid = c.oid AND i.indisprimary), '[]'), \
                        has_table_privilege(c.oid, 'SELECT') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {} AND c.relname = {}",
                quote_literal(&table.schema),
                quote_literal(&table.table)
            );
            let Some(row) = self.row(&sql)? else {
                bail!(
                    "table {table} does not exist in {} (field `tables`): create it, or fix the name (schema.table, as the catalog spells it)",
                    self.server
                );
            };
            let [kind, identity, primary_key, select] = &row[..] else { bail!("unexpected catalog answer for {table}") };
            let primary_key: Vec<String> = serde_json::from_str(primary_key).unwrap_or_default();
            if kind != "r" && kind != "p" {
                bail!("{table} in {} is not a table (relkind {kind}); only tables can be published (field `tables`)", self.server);
            }
            if select != "t" {
                bail!("the role has no SELECT on {table}: `GRANT SELECT ON {} TO <role>;`", table.quoted());
            }
            let no_identity = identity == "n" || (identity == "d" && primary_key.is_empty());
            if old_rows && no_identity {
                bail!(
                    "table {table} has no replica identity (no primary key, REPLICA IDENTITY {}), so once published PostgreSQL \
                     would refuse its UPDATEs and DELETEs: run `ALTER TABLE {} REPLICA IDENTITY FULL;` or add a primary key",
                    if identity == "n" { "NOTHING" } else { "DEFAULT" },
                    table.quoted()
                );
            }
            if old_rows && identity != "f" {
                info!(
                    table = %table,
                    "Old rows of updates and deletes carry only the key columns; `ALTER TABLE {} REPLICA IDENTITY FULL` gives whole old rows.",
                    table.quoted()
                );
            }
            infos.push(TableInfo { table: table.clone(), partitioned: kind == "p", primary_key });
        }
        Ok(infos)
    }

    /// Creates the publication, or brings an existing one to exactly `tables` and
    /// `operations`.
    /// A partitioned table is published through its root (`publish_via_partition_root`), so
    /// its changes carry its name rather than a partition's.
    pub fn ensure_publication(&mut self, name: &str, tables: &[TableInfo], operations: &[Operation]) -> anyhow::Result<()> {
        let via_root = tables.iter().any(|t| t.partitioned);
        let tables: Vec<TableName> = tables.iter().map(|t| t.table.clone()).collect();
        let list = tables.iter().map(TableName::quoted).collect::<Vec<_>>().join(", ");
        let publish = operations.iter().map(|op| op.as_str()).collect::<Vec<_>>().join(", ");
        let with = if via_root { format!("publish = '{publish}', publish_via_partition_root = true") } else { format!("publish = '{publish}'") };
        let fix = |e: anyhow::Error, sql: &str| {
            e.context(format!(
                "setting up publication {name}: the role must own the tables and may create in the database; \
                 or run as their owner: `{sql}`"
            ))
        };
        let existing = self.row(&format!(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = {}",
            quote_literal(name)
        ))?;
        let Some(flags) = existing else {
            let sql = format!("CREATE PUBLICATION {} FOR TABLE {list} WITH ({with})", quote_ident(name));
            self.query(&sql).map_err(|e| fix(e, &sql))?;
            info!(publication = name, tables = %list, publish, "Created the publication.");
            return Ok(());
        };
        if flags.first().map(String::as_str) == Some("t") {
            // FOR ALL TABLES: already covers ours; the decoder filters the rest.
            return Ok(());
        }
        let wanted: Vec<String> = [Operation::Insert, Operation::Update, Operation::Delete, Operation::Truncate]
            .iter()
            .map(|op| if operations.contains(op) { "t".to_owned() } else { "f".to_owned() })
            .collect();
        let root = if via_root {
            self.column(&format!("SELECT pubviaroot FROM pg_publication WHERE pubname = {}", quote_literal(name)))?.pop()
        } else {
            None
        };
        if flags[1..] != wanted[..] || root.is_some_and(|r| r != "t") {
            let sql = format!("ALTER PUBLICATION {} SET ({with})", quote_ident(name));
            self.query(&sql).map_err(|e| fix(e, &sql))?;
            info!(publication = name, publish, "Changed what the publication publishes.");
        }
        let mut published: Vec<String> = self.column(&format!(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = {} ORDER BY 1",
            quote_literal(name)
        ))?;
        published.sort();
        let mut configured: Vec<String> = tables.iter().map(ToString::to_string).collect();
        configured.sort();
        if published != configured {
            let sql = format!("ALTER PUBLICATION {} SET TABLE {list}", quote_ident(name));
            self.query(&sql).map_err(|e| fix(e, &sql))?;
            info!(publication = name, tables = %list, "Changed the publication's tables.");
        }
        Ok(())
    }

    /// An existing slot must be a pgoutput slot of this database; `None` if there is none.
    pub fn check_slot(&mut self, slot: &str) -> anyhow::Result<Option<SlotState>> {
        let row = self.row(&format!(
            "SELECT s.slot_type, coalesce(s.plugin, ''), coalesce(s.database, ''), current_database(), coalesce(s.active_pid::text, ''), \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint::text, ''), coalesce(s.confirmed_flush_lsn::text, '') \
             FROM pg_replication_slots s WHERE s.slot_name = {}",
            quote_literal(slot)
        ))?;
        let Some(row) = row else { return Ok(None) };
        let [slot_type, plugin, database, current, pid, lag, confirmed] = &row[..] else { bail!("unexpected catalog answer for slot {slot}") };
        if slot_type != "logical" || plugin != "pgoutput" {
            bail!(
                "replication slot {slot} exists but is a {slot_type} slot{}; the postgres trigger needs a pgoutput slot: \
                 choose another `slot`, or drop it with `SELECT pg_drop_replication_slot('{slot}');`",
                if plugin.is_empty() { String::new() } else { format!(" of plugin {plugin}") }
            );
        }
        if database != current {
            bail!("replication slot {slot} belongs to database {database}, not {current}: choose another `slot`");
        }
        Ok(Some(SlotState { active_pid: pid.parse().ok(), lag_bytes: lag.parse().ok(), confirmed_lsn: confirmed.clone() }))
    }
}

/// A published table as the catalog has it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub table: TableName,
    /// Partitioned: published through its root.
    pub partitioned: bool,
    /// Its primary key columns, in key order (empty without one).
    pub primary_key: Vec<String>,
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    /// The backend streaming from it, if any.
    pub active_pid: Option<i64>,
    /// WAL written since the slot's confirmed position: what PostgreSQL keeps for it.
    pub lag_bytes: Option<i64>,
    pub confirmed_lsn: String,
}

/// The slot of a trigger, read for `sluice triggers list`.
pub fn slot_state(dsn: &str, server: &str, slot: &str) -> anyhow::Result<Option<SlotState>> {
    Catalog::connect(dsn, server, 3)?.check_slot(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_join_either_form() {
        assert_eq!(
            with_params("postgres://u@h:5432/db", &[("replication", "database")]).unwrap(),
            "postgres://u@h:5432/db?replication=database"
        );
        assert_eq!(
            with_params("postgres://u@h/db?sslmode=require&connect_timeout=2", &[("connect_timeout", "10")]).unwrap(),
            "postgres://u@h/db?sslmode=require&connect_timeout=2"
        );
        assert_eq!(
            with_params("host=h dbname=db", &[("replication", "database")]).unwrap(),
            "host=h dbname=db replication=database"
        );
    }
}
