//! The local PostgreSQL (configured for logical decoding by scripts/setup-test.sh): each test
//! gets its own table, publication and slot, all named `sluice_test_<unique>`, dropped when
//! the fixture is.

use std::process::Command;

use tokio_postgres::{Client, NoTls};

/// The server the tests use.
pub fn dsn() -> String {
    std::env::var("SLUICE_TEST_PG_DSN").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A test's names on the shared server, cleaned up on drop.
pub struct PgFixture {
    /// Table, publication and slot share this name.
    pub name: String,
    pub client: Client,
    /// Roles made by the test, dropped with the rest.
    roles: Vec<String>,
}

impl PgFixture {
    pub async fn new() -> Self {
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple().to_string().get(..12).unwrap());
        let client = connect().await;
        let level: String = client.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
        assert_eq!(level, "logical", "scripts/setup-test.sh sets wal_level = logical on {}", dsn());
        Self { name, client, roles: Vec::new() }
    }

    /// `triggers/<trigger>.toml` text for this fixture's table, delivering to `function`.
    pub fn trigger(&self, function: &str, extra: &str) -> String {
        format!(
            "kind = \"postgres\"\ndsn = \"{}\"\nslot = \"{n}\"\npublication = \"{n}\"\ntables = [\"public.{n}\"]\nfunction = \"{function}\"\n{extra}",
            dsn(),
            n = self.name
        )
    }

    /// A role that may log in but not stream.
    pub async fn role_without_replication(&mut self) -> String {
        let role = format!("{}_role", self.name);
        self.client.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
        self.roles.push(role.clone());
        role
    }
}

pub async fn connect() -> Client {
    let (client, connection) = tokio_postgres::connect(&dsn(), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

impl Drop for PgFixture {
    fn drop(&mut self) {
        // Synchronous, through psql: drop runs outside any runtime's reach.
        let n = &self.name;
        let mut statements = vec![
            format!("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{n}' AND active_pid IS NOT NULL"),
            "SELECT pg_sleep(0.3)".to_owned(),
            format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{n}'"),
            format!("DROP PUBLICATION IF EXISTS {n}"),
            format!("DROP TABLE IF EXISTS {n}"),
        ];
        statements.extend(self.roles.iter().map(|role| format!("DROP ROLE IF EXISTS {role}")));
        let mut command = Command::new("psql");
        command.args([dsn().as_str(), "-X", "-q"]);
        for statement in &statements {
            command.args(["-c", statement]);
        }
        let _ = command.output();
    }
}

/// A throwaway PostgreSQL cluster of the test's own (initdb into a temporary directory, on a
/// free port), for server settings the shared one must not change; stopped on drop.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    pub port: u16,
}

impl PrivateCluster {
    /// Starts one with `settings` (`-c name=value` pairs, as `"wal_level=replica"`).
    pub fn start(settings: &[&str]) -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql (scripts/setup-test.sh installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        // The server refuses to run as root: it runs as the `postgres` user then, who must
        // own its directory.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let run = |program: &str, args: Vec<String>| {
            let out = server_command(&bin, program).args(args).output().unwrap();
            assert!(out.status.success(), "{program}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        };
        let data = dir.path().join("data").display().to_string();
        run("initdb", vec!["-D".into(), data.clone(), "-A".into(), "trust".into(), "-U".into(), "postgres".into(), "--no-sync".into()]);
        let mut options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.path().display());
        for setting in settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = dir.path().join("log").display().to_string();
        run("pg_ctl", vec!["-D".into(), data, "-o".into(), options, "-l".into(), log, "-w".into(), "start".into()]);
        Self { dir, bin, port }
    }

    pub fn dsn(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `triggers/<trigger>.toml` text for its table `orders`, delivering to `function`.
    pub fn trigger(&self, function: &str) -> String {
        format!("kind = \"postgres\"\ndsn = \"{}\"\ntables = [\"orders\"]\nfunction = \"{function}\"\n", self.dsn())
    }

    /// A client of its database `postgres`.
    pub async fn connect(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Takes the server's only WAL sender (start it with `max_wal_senders=1`) with an idle
    /// replication connection of psql, until the returned process is killed: every other
    /// replication connection is refused (`number of requested standby connections exceeds
    /// max_wal_senders`, a line of [`Self::log`] each), ordinary connections are not.
    pub async fn take_the_wal_sender(&self) -> std::process::Child {
        let mut holder = Command::new("psql")
            .arg(format!("{}?replication=database", self.dsn()))
            .args(["-X", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if !self.wal_sender_taken().await {
            let _ = holder.kill();
            let _ = holder.wait();
            panic!("psql never took the WAL sender:\n{}", self.log());
        }
        holder
    }

    /// Whether a WAL sender runs, within 10 s.
    async fn wal_sender_taken(&self) -> bool {
        let client = self.connect().await;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(10) {
            let row = client.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'", &[]).await.unwrap();
            if row.get::<_, i64>(0) >= 1 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// A PostgreSQL server program; as the `postgres` user when run as root, which the server
/// refuses to be.
fn server_command(bin: &std::path::Path, program: &str) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = server_command(&self.bin, "pg_ctl").arg("-D").arg(data).args(["-m", "immediate", "stop"]).output();
    }
}
