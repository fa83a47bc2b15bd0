//! Connections to NATS servers that authenticate (user and password, token, NKey, `.creds`
//! in operator mode) or require TLS with a private CA and client certificates: with the right
//! settings `sluice up` runs a function on a published event; wrong credentials or an
//! untrusted certificate stop it at once (exit 2) with an error saying what to fix; no
//! secret is ever printed. Also `[bus] replicas` above the cluster's size is refused at start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::auth::{ca, Operator, Pki};
use common::*;

/// A project running the `hello` example on topic `greetings`, with `toml` as sluice.toml.
fn project(toml: &str) -> Project {
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]");
    std::fs::write(project.path().join("sluice.toml"), toml).unwrap();
    project
}

/// `sluice --dir PROJECT ARGS...` with `env`, waited for.
fn sluice(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Output {
    project.command(args).envs(env.iter().copied()).env_remove("SLUICE_NATS_URL").output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `sluice up` with global flags `args` and `env` runs `hello` on an event `sluice publish`
/// (with the same settings) sent; `client` reads the result. Returns everything both printed.
async fn runs_end_to_end(project: &Project, client: &async_nats::Client, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut results = Results::subscribe(client, "hello").await;
    let mut command = Command::new(SLUICE);
    command.arg("--dir").arg(project.path()).args(args).arg("up").envs(env.iter().copied());
    let mut up = project.spawn_up(command, "up", "sluice up");
    let mut publish = args.to_vec();
    publish.extend(["--json", "publish", "greetings", "--data", r#"{"name":"Alice"}"#]);
    let out = sluice(project, &publish, env);
    assert!(out.status.success(), "{}", text(&out));
    results.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(results.received[0].1["message"], "Hello, Alice!");
    assert!(up.terminate().success(), "{}", up.log());
    format!("{}\n{}\n{}", up.banner, up.log(), text(&out))
}

/// `sluice ARGS up` fails promptly with exit 2 and an error holding every one of `words`
/// and none of `secrets`.
fn refused(project: &Project, args: &[&str], words: &[&str], secrets: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("up");
    let out = project.sluice_within(&all, Duration::from_secs(30));
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    for word in words {
        assert!(printed.contains(word), "{word:?} is not in:\n{printed}");
    }
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret:?} was printed:\n{printed}");
    }
    printed
}

fn assert_secret_free(printed: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret:?} was printed:\n{printed}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password() {
    let nats = NatsServer::start_with_config(Some("authorization {\n  users = [ { user: alice, password: s3cr3t } ]\n}\n"));
    let url = nats.url();
    let client = async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cr3t".into()).connect(&url).await.unwrap();
    // The user in sluice.toml, the password in the environment.
    let project = project(&format!("[nats]\nurl = {url:?}\nuser = \"alice\"\n"));
    let printed = runs_end_to_end(&project, &client, &[], &[("SLUICE_NATS_PASSWORD", "s3cr3t")]).await;
    assert_secret_free(&printed, &["s3cr3t"]);

    refused(
        &project,
        &["--nats-password", "b4dp4ss"],
        &[&format!("NATS at {url} refused the credentials (authorization violation)"), "check [nats] user and password (or SLUICE_NATS_USER/SLUICE_NATS_PASSWORD)"],
        &["b4dp4ss"],
    );
    // No credentials at all: the hint names every way to give them.
    refused(&Project::new(), &["--nats", &url], &["refused the credentials", "requires credentials and none are configured"], &[]);

    // Credentials in the URL still work, and are shown redacted.
    let bare = Project::new();
    bare.function("hello", "hello", "subscribe = [\"greetings\"]");
    let with_password = url.replace("nats://", "nats://alice:s3cr3t@");
    let printed = runs_end_to_end(&bare, &client, &["--nats", &with_password], &[]).await;
    assert!(printed.contains(&url.replace("nats://", "nats://alice:***@")), "{printed}");
    assert_secret_free(&printed, &["s3cr3t"]);
    let printed = refused(&bare, &["--nats", &url.replace("nats://", "nats://alice:b4dp4ss@")], &["refused the credentials", "alice:***@"], &["b4dp4ss"]);
    assert!(printed.contains("credentials in the NATS URL"), "{printed}");

    // A password from the environment is not shown by --help either.
    let help = sluice(&project, &["up", "--help"], &[("SLUICE_NATS_PASSWORD", "s3cr3t"), ("SLUICE_NATS_TOKEN", "t0k3n")]);
    assert!(help.status.success(), "{}", text(&help));
    assert!(text(&help).contains("--nats-password"), "{}", text(&help));
    assert_secret_free(&text(&help), &["s3cr3t", "t0k3n"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn token() {
    let nats = NatsServer::start_with_config(Some("authorization {\n  token: \"t0k3n\"\n}\n"));
    let url = nats.url();
    let client = async_nats::ConnectOptions::with_token("t0k3n".into()).connect(&url).await.unwrap();
    let project = project("");
    let printed = runs_end_to_end(&project, &client, &["--nats", &url, "--nats-token", "t0k3n"], &[]).await;
    assert_secret_free(&printed, &["t0k3n"]);
    refused(&project, &["--nats", &url, "--nats-token", "b4dt0k3n"], &["refused the credentials (authorization violation)", "check [nats] token (or SLUICE_NATS_TOKEN)"], &["b4dt0k3n"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn nkey() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let nats = NatsServer::start_with_config(Some(&format!("authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n", user.public_key())));
    let url = nats.url();
    let client = async_nats::ConnectOptions::with_nkey(seed.clone()).connect(&url).await.unwrap();
    // A path in sluice.toml is relative to the project.
    let project = project(&format!("[nats]\nurl = {url:?}\nnkey = \"user.nk\"\n"));
    std::fs::write(project.path().join("user.nk"), format!("{seed}\n")).unwrap();
    let printed = runs_end_to_end(&project, &client, &[], &[]).await;
    assert_secret_free(&printed, &[&seed]);

    let stranger = nkeys::KeyPair::new_user();
    let other = project.path().join("other.nk");
    std::fs::write(&other, stranger.seed().unwrap()).unwrap();
    refused(
        &project,
        &["--nats-nkey", other.to_str().unwrap()],
        &["refused the credentials (authorization violation)", &stranger.public_key(), "other.nk"],
        &[&stranger.seed().unwrap()],
    );
    // A file that is not there is a configuration error naming the field and the path.
    refused(&project, &["--nats-nkey", "/nonexistent/user.nk"], &["--nats-nkey / SLUICE_NATS_NKEY", "/nonexistent/user.nk", "cannot read"], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn creds_in_operator_mode() {
    let operator = Operator::new();
    let nats = NatsServer::start_with_config(Some(&operator.config));
    let url = nats.url();
    let client = async_nats::ConnectOptions::with_credentials(&operator.creds).unwrap().connect(&url).await.unwrap();
    let project = project(&format!("[nats]\nurl = {url:?}\n"));
    let creds = project.path().join("app.creds");
    std::fs::write(&creds, &operator.creds).unwrap();
    let printed = runs_end_to_end(&project, &client, &[], &[("SLUICE_NATS_CREDS", creds.to_str().unwrap())]).await;
    let seed = operator.creds.lines().find(|line| line.starts_with("SU")).unwrap();
    assert_secret_free(&printed, &[seed]);

    // A user of an account this server does not trust.
    let foreign = project.path().join("foreign.creds");
    std::fs::write(&foreign, &operator.foreign_creds).unwrap();
    refused(&project, &["--nats-creds", foreign.to_str().unwrap()], &["refused the credentials (authorization violation)", "check [nats] creds", "foreign.creds"], &[]);
    // Two ways at once is a configuration error.
    std::fs::write(project.path().join("sluice.toml"), format!("[nats]\nurl = {url:?}\ncreds = \"app.creds\"\ntoken = \"x\"\n")).unwrap();
    refused(&project, &[], &["[nats] token", "[nats] creds", "give only one"], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_a_private_ca_and_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let nats = NatsServer::start_with_config(Some(&pki.server_config()));
    let url = nats.url();
    sluice::bus::connection::install_crypto_provider();
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
        .require_tls(true)
        .connect(&url)
        .await
        .unwrap();
    let show = |path: &Path| path.display().to_string();
    let project = project(&format!(
        "[nats]\nurl = {url:?}\ntls_ca = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        show(&pki.ca),
        show(&pki.client_cert),
        show(&pki.client_key)
    ));
    runs_end_to_end(&project, &client, &[], &[]).await;

    // A server certificate signed by another CA than the one trusted.
    let other = ca(certs.path(), "other");
    refused(&project, &["--nats-tls-ca", &show(&other)], &[&format!("TLS with NATS at {url} failed"), "not trusted", &show(&other), "tls_ca"], &[]);
    // No TLS configured for a server that requires it: the system's roots do not know the CA.
    refused(&Project::new(), &["--nats", &url], &["TLS with NATS at", "not trusted", "system's trusted roots", "tls_ca"], &[]);
    // The CA but no client certificate, for a server that verifies clients.
    let printed = refused(&Project::new(), &["--nats", &url, "--nats-tls-ca", &show(&pki.ca)], &["TLS with NATS at"], &[]);
    assert!(printed.contains("tls_cert"), "{printed}");
    // A certificate without its key.
    refused(&Project::new(), &["--nats", &url, "--nats-tls-cert", &show(&pki.client_cert)], &["--nats-tls-cert / SLUICE_NATS_TLS_CERT", "tls_key"], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_above_the_cluster_size_are_refused() {
    let nats = NatsServer::start();
    let url = nats.url();
    let project = project(&format!("[nats]\nurl = {url:?}\n[bus]\nreplicas = 3\n"));
    refused(&project, &[], &[&format!("[bus] replicas = 3 but the NATS cluster at {url} has 1 JetStream server(s)"), "lower replicas"], &[]);
    // Nothing was created with replicas the server cannot hold.
    let js = async_nats::jetstream::new(nats.client().await);
    assert!(js.get_stream("SLUICE_EVENTS").await.is_err());
}
