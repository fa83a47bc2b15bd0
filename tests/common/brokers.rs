//! Brokers started per test: Tansu (Kafka protocol) and Mosquitto (MQTT), each on a free
//! loopback port; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

fn binary(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(fallback), PathBuf::from)
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what} did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the broker die with the test process, even one killed before its fixtures drop.
fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A Kafka-protocol broker (Tansu, in-memory storage).
pub struct Kafka {
    child: Option<Child>,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl Kafka {
    pub fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = die_with_parent(&mut Command::new(binary("SLUICE_TANSU", "tansu")))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("tansu runs (scripts/setup-test.sh builds it; or set SLUICE_TANSU)");
        wait_for_port(port, &mut child, "tansu");
        Self { child: Some(child), port, log }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// An MQTT broker (Mosquitto, anonymous, in memory).
pub struct Mqtt {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mqtt {
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nlog_dest stderr\n"),
        )
        .unwrap();
        let mut child = die_with_parent(&mut Command::new(binary("SLUICE_MOSQUITTO", "mosquitto")))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (scripts/setup-test.sh installs it; or set SLUICE_MOSQUITTO)");
        wait_for_port(port, &mut child, "mosquitto");
        Self { child: Some(child), port, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Publishes QoS 1 messages and waits until the broker acknowledged all of them.
pub async fn mqtt_publish(port: u16, messages: Vec<(String, Vec<u8>)>) {
    let mut options = rumqttc::MqttOptions::new(format!("test-publisher-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    let count = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("broker answers").unwrap();
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
}
