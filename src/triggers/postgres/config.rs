//! `kind = "postgres"`: the trigger file and its checks.

use serde::{Deserialize, Serialize};

use crate::triggers::Target;

/// The environment variable read when a trigger file has no `dsn`.
pub const DSN_ENV: &str = "SLUICE_PG_DSN";

/// `kind = "postgres"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub kind: String,
    /// libpq connection string, URI (`postgres://user@host:5432/db`) or key/value
    /// (`host=... dbname=...`). A value `"$NAME"` is read from the environment; without
    /// `dsn`, `SLUICE_PG_DSN` is used.
    #[serde(default)]
    pub dsn: Option<String>,
    /// The logical replication slot, created if missing. Default `sluice_<trigger>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// The publication, created if missing and kept equal to `tables` and `operations`.
    /// Default: the slot's name.
    #[serde(default)]
    pub publication: Option<String>,
    /// `schema.table` (or `table`, in `public`).
    pub tables: Vec<String>,
    /// Which changes become events: `insert`, `update`, `delete`, `truncate`.
    /// Default: insert, update, delete.
    #[serde(default = "default_operations")]
    pub operations: Vec<Operation>,
    pub topic: Option<String>,
    pub function: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
        }
    }
}

fn default_operations() -> Vec<Operation> {
    vec![Operation::Insert, Operation::Update, Operation::Delete]
}

/// A published table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `schema.table` or `table` (schema `public`). Names are plain SQL identifiers:
    /// letters, digits, `_` and `$`, not starting with a digit; as PostgreSQL folds unquoted
    /// names, they are matched exactly (write them as the catalog has them).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (schema, table) = match text.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("public", text),
        };
        for part in [schema, table] {
            if !is_identifier(part) {
                return Err(format!(
                    "{text:?} is not `schema.table` or `table` (identifiers of letters, digits, `_`, `$`)"
                ));
            }
        }
        Ok(Self { schema: schema.to_owned(), table: table.to_owned() })
    }

    /// `"schema"."table"`, for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A plain SQL identifier: letters, digits, `_` and `$`, not starting with a digit or `$`,
/// at most 63 bytes.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '$')
}

/// A SQL identifier in double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Slot names are what PostgreSQL allows: lower-case letters, digits and `_`, at most 63.
fn check_slot_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: use lower-case letters, digits and `_` (at most 63), as PostgreSQL requires of slot names"))
    }
}

impl PostgresConfig {
    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    /// The slot's name for trigger `trigger`.
    pub fn slot_name(&self, trigger: &str) -> String {
        self.slot.clone().unwrap_or_else(|| format!("sluice_{}", trigger.to_lowercase().replace('-', "_")))
    }

    pub fn publication_name(&self, trigger: &str) -> String {
        self.publication.clone().unwrap_or_else(|| self.slot_name(trigger))
    }

    pub fn table_names(&self) -> Vec<TableName> {
        self.tables.iter().filter_map(|t| TableName::parse(t).ok()).collect()
    }

    pub fn source(&self) -> String {
        let tables = self.tables.join(",");
        match self.dsn.as_deref() {
            Some(var) if var.starts_with('$') => format!("{var} {tables}"),
            Some(dsn) => format!("{} {tables}", describe_dsn(dsn).unwrap_or_else(|_| "?".to_owned())),
            None => format!("${DSN_ENV} {tables}"),
        }
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if let Some(dsn) = &self.dsn {
            if !dsn.starts_with('$') {
                if let Err(m) = describe_dsn(dsn) {
                    return field("dsn", m);
                }
            }
        }
        if let Some(slot) = &self.slot {
            if let Err(m) = check_slot_name(slot) {
                return field("slot", m);
            }
        }
        if let Some(publication) = self.publication.as_deref().filter(|p| !is_identifier(p)) {
            return field("publication", format!("{publication:?} is not a plain identifier (letters, digits, `_`, `$`)"));
        }
        if self.tables.is_empty() {
            return field("tables", "is empty: list the tables whose changes fire, as \"schema.table\"".to_owned());
        }
        for table in &self.tables {
            if let Err(m) = TableName::parse(table) {
                return field("tables", m);
            }
        }
        if self.operations.is_empty() {
            return field("operations", "is empty: list some of insert, update, delete, truncate".to_owned());
        }
        crate::triggers::check_target(&self.topic, &self.function)
    }

    /// The connection string: `dsn` (or the variable it names), else `SLUICE_PG_DSN`.
    pub fn resolve_dsn(&self, trigger: &str) -> anyhow::Result<String> {
        match self.dsn.as_deref() {
            Some(dsn) => match dsn.strip_prefix('$') {
                Some(var) => std::env::var(var)
                    .map_err(|_| anyhow::anyhow!("trigger {trigger}: dsn names ${var}, which is not set")),
                None => Ok(dsn.to_owned()),
            },
            None => std::env::var(DSN_ENV).map_err(|_| {
                anyhow::anyhow!("trigger {trigger}: no `dsn` in the trigger file and {DSN_ENV} is not set; set one of them")
            }),
        }
    }
}

/// `host:port/database` of a connection string (no user, no password), or what is wrong
/// with it. Both libpq forms: a URI (`postgres://user@host:port/db?param=value`) and
/// key/value pairs (`host=... port=... dbname=...`, values in single quotes when they hold
/// spaces).
pub fn describe_dsn(dsn: &str) -> Result<String, String> {
    let mut params: Vec<(String, String)> = Vec::new();
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let url = url::Url::parse(dsn).map_err(|e| format!("not a PostgreSQL connection URI: {e}"))?;
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            params.push(("host".into(), host.to_owned()));
        }
        if let Some(port) = url.port() {
            params.push(("port".into(), port.to_string()));
        }
        if !url.username().is_empty() {
            params.push(("user".into(), url.username().to_owned()));
        }
        let database = url.path().trim_start_matches('/');
        if !database.is_empty() {
            params.push(("dbname".into(), database.to_owned()));
        }
        params.extend(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())));
    } else {
        params = key_value_pairs(dsn)?;
    }
    let get = |key: &str| params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let host = get("host").and_then(|h| h.split(',').next()).filter(|h| !h.is_empty()).unwrap_or("localhost");
    let port = match get("port").and_then(|p| p.split(',').next()).filter(|p| !p.is_empty()) {
        Some(port) => port.parse::<u16>().map_err(|_| format!("port {port:?} is not a port number"))?,
        None => 5432,
    };
    let database = get("dbname").or(get("user")).unwrap_or("postgres");
    Ok(format!("{host}:{port}/{database}"))
}

/// libpq's key/value form (read here only to name the server: `tokio-postgres` refuses
/// keywords it does not implement, such as `sslrootcert`, and `pg_walstream` keeps its
/// parser private): `key = value` pairs separated by spaces; a value in single quotes
/// may hold spaces, with `\'` and `\\` escaped.
fn key_value_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return Err(format!("{text:?} is neither a postgres:// URI nor `key=value` pairs"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("{text:?}: a quoted value of {key} is not closed")),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> PostgresConfig {
        toml::from_str(text).unwrap()
    }

    const OK: &str = "kind = \"postgres\"\ndsn = \"postgres://postgres@127.0.0.1:5432/test\"\ntables = [\"public.orders\", \"customers\"]\ntopic = \"db.orders\"\n";

    #[test]
    fn defaults_follow_the_trigger_name() {
        let config = parse(OK);
        assert!(config.check().is_ok());
        assert_eq!(config.slot_name("orders-cdc"), "sluice_orders_cdc");
        assert_eq!(config.publication_name("orders-cdc"), "sluice_orders_cdc");
        assert_eq!(config.operations, vec![Operation::Insert, Operation::Update, Operation::Delete]);
        assert_eq!(
            config.table_names(),
            vec![
                TableName { schema: "public".into(), table: "orders".into() },
                TableName { schema: "public".into(), table: "customers".into() }
            ]
        );
        assert_eq!(config.source(), "127.0.0.1:5432/test public.orders,customers");
        assert_eq!(parse(&OK.replace("postgres://postgres@127.0.0.1:5432/test", "$ORDERS_DSN")).source(), "$ORDERS_DSN public.orders,customers");
    }

    #[test]
    fn checks_name_the_field() {
        let field = |t: &str| parse(t).check().unwrap_err().0;
        assert_eq!(field(&OK.replace("postgres://postgres@127.0.0.1:5432/test", "postgres://h:port/x")), "dsn");
        assert_eq!(field(&format!("{OK}slot = \"Orders\"\n")), "slot");
        assert_eq!(field(&format!("{OK}publication = \"a.b\"\n")), "publication");
        assert_eq!(field(&OK.replace("[\"public.orders\", \"customers\"]", "[]")), "tables");
        assert_eq!(field(&OK.replace("\"customers\"", "\"a;drop table x\"")), "tables");
        assert_eq!(field(&format!("{OK}operations = []\n")), "operations");
        assert!(toml::from_str::<PostgresConfig>(&format!("{OK}operations = [\"upsert\"]\n")).is_err());
    }

    #[test]
    fn any_libpq_connection_string_is_described() {
        assert_eq!(describe_dsn("host = db options='-c a=b' dbname='my shop'").unwrap(), "db:5432/my shop");
        assert!(describe_dsn("host=db options='-c").is_err());
        assert!(describe_dsn("just words").is_err());
        assert_eq!(describe_dsn("postgres://u:secret@db.internal:6432/shop?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap(), "db.internal:6432/shop");
        assert_eq!(describe_dsn("host=db port=5433 dbname=shop user=u sslrootcert=/etc/ca.pem").unwrap(), "db:5433/shop");
        assert_eq!(describe_dsn("postgresql:///shop").unwrap(), "localhost:5432/shop");
        assert!(describe_dsn("postgres://h:port/db").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(TableName::parse("s.t").unwrap().quoted(), "\"s\".\"t\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }
}
