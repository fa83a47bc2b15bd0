//! A real S3-compatible server per test: SeaweedFS `weed server` (master, volume, filer and S3
//! gateway in one process) on free loopback ports, with a temporary store and signature
//! authentication for one fixed access key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;

/// The `weed` binary the tests run (SeaweedFS 4.x; set up by scripts/setup-test.sh).
pub fn weed_binary() -> PathBuf {
    std::env::var_os("SLUICE_WEED").map_or_else(|| PathBuf::from("weed"), PathBuf::from)
}

/// A SeaweedFS S3 server; SIGKILLed on drop (`weed server` forks no children).
pub struct S3Server {
    child: Option<Child>,
    /// The S3 gateway's HTTP port.
    pub port: u16,
    /// The master's HTTP port (`/dir/status`, `weed shell -master=127.0.0.1:PORT`).
    pub master_port: u16,
    /// The gRPC ports: weed also listens on `/tmp/seaweedfs-<service>-grpc-<port>.sock` for
    /// each, a path it does not let us choose and leaves behind when killed.
    grpc_ports: [(&'static str, u16); 4],
    dir: tempfile::TempDir,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "sluice-test-access";
    pub const SECRET_KEY: &'static str = "sluice-test-secret";

    /// Starts the server and waits until it serves S3 requests and can store objects.
    pub fn start() -> Self {
        // A port found free can be taken before weed binds it (weed's own connections among
        // its services take ephemeral ports while it starts): weed then exits, and the
        // whole server is started again on new ports.
        let mut failure = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(server) => return server,
                Err(error) if error.contains("address already in use") => failure = error,
                Err(error) => panic!("{error}"),
            }
        }
        panic!("SeaweedFS found a port taken five times; the last time: {failure}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        // Every port explicit: unset ones default to fixed numbers (8333, 9333, port + 10000, ...)
        // that parallel tests would fight over.
        let mut ports = Vec::new();
        while ports.len() < 8 {
            let port = super::free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = ports[..] else {
            unreachable!()
        };
        let config = dir.path().join("s3.json");
        let identities = serde_json::json!({
            "identities": [{
                "name": "sluice-test",
                "credentials": [{ "accessKey": Self::ACCESS_KEY, "secretKey": Self::SECRET_KEY }],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }]
        });
        std::fs::write(&config, identities.to_string()).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log_path = dir.path().join("weed.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let d = |p: &str| dir.path().join(p).display().to_string();
        let args = [
            // Log to stderr (our weed.log) only: by default glog also writes files into /tmp.
            "-logtostderr".to_owned(),
            "server".to_owned(),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-dir={}", data.display()),
            "-metricsPort=0".to_owned(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_grpc}"),
            // Single master without Raft bootstrap: otherwise the volume server's first heartbeat
            // often loses a race with the leader election and retries only 5 s later.
            "-master.peers=none".to_owned(),
            "-master.telemetry=false".to_owned(),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={volume_grpc}"),
            // Each bucket is a collection that takes 7 volumes up front; the default of 8
            // volumes would allow one bucket. Volume files are sparse.
            "-volume.max=1000".to_owned(),
            "-filer".to_owned(),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={filer_grpc}"),
            format!("-filer.localSocket={}", d("filer.sock")),
            "-s3".to_owned(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={s3_grpc}"),
            format!("-s3.localSocket={}", d("s3.sock")),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            format!("-s3.config={}", config.display()),
            // As on AWS: writing to a missing bucket fails rather than creating it.
            "-s3.autoCreateBucket=false".to_owned(),
        ];
        let mut command = Command::new(weed_binary());
        // If the test process dies without dropping us (killed, aborted), take weed with it.
        // (The signal follows the spawning thread: start the server on the test's own thread.)
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args(&args)
            // weed reads optional *.toml settings from ., $HOME/.seaweedfs and /etc/seaweedfs:
            // keep a developer's own out of the tests.
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("weed runs (scripts/setup-test.sh installs SeaweedFS; or set SLUICE_WEED)");
        let mut server = Self {
            child: Some(child),
            port: s3,
            master_port: master,
            grpc_ports: [("master", master_grpc), ("volume", volume_grpc), ("filer", filer_grpc), ("s3", s3_grpc)],
            dir,
        };
        server.wait_ready(volume, &log_path)?;
        Ok(server)
    }

    /// Ready when the S3 gateway answers HTTP (an unsigned request gets 403) and the volume
    /// server has registered with the master (before that, writes fail or stall).
    fn wait_ready(&mut self, volume_port: u16, log_path: &std::path::Path) -> Result<(), String> {
        let started = Instant::now();
        let volume = format!("\"Url\":\"127.0.0.1:{volume_port}\"");
        loop {
            let s3_up = http_get(self.port, "/").is_some();
            if s3_up && http_get(self.master_port, "/dir/status").is_some_and(|body| body.contains(&volume)) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(format!(
                    "SeaweedFS S3 server did not become ready ({}); last lines of its log:\n{}",
                    exited.map_or_else(|| "30 s timeout".to_owned(), |s| format!("exited: {s}")),
                    tail.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn region(&self) -> &'static str {
        "us-east-1"
    }

    /// Creates `name` with a signed S3 CreateBucket request (object_store has no such API).
    pub async fn create_bucket(&self, name: &str) {
        let credential =
            AwsCredential { key_id: Self::ACCESS_KEY.to_owned(), secret_key: Self::SECRET_KEY.to_owned(), token: None };
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.method_mut() = "PUT".parse().unwrap();
        *request.uri_mut() = format!("{}/{name}", self.endpoint()).parse().unwrap();
        AwsAuthorizer::new(&credential, "s3", self.region()).authorize(&mut request, None);
        let client = ReqwestConnector::default().connect(&ClientOptions::new().with_allow_http(true)).unwrap();
        let response = client.execute(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().bytes().await.unwrap_or_default();
        assert!(status.is_success(), "CreateBucket {name}: {status} {}", String::from_utf8_lossy(&body));
    }

    /// An object_store client for `bucket`, signing with the server's key.
    pub fn client(&self, bucket: &str) -> AmazonS3 {
        self.client_with_secret(bucket, Self::SECRET_KEY)
    }

    /// An object_store client for `bucket` that signs with `secret_key` (e.g. a wrong one).
    pub fn client_with_secret(&self, bucket: &str, secret_key: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(bucket)
            .with_region(self.region())
            .with_access_key_id(Self::ACCESS_KEY)
            .with_secret_access_key(secret_key)
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// The temporary directory holding the server's data, config and `weed.log`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (service, port) in self.grpc_ports {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
        }
    }
}

/// The body of a plain `GET path` to a loopback port, if it answers HTTP at all.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/").then_some(response)
}
