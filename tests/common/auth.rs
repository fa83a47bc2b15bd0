//! Credentials for servers that authenticate: an operator, account and user signed with
//! NKeys as JWTs (what `nsc` makes), and a CA with server and client certificates (made with
//! the `openssl` CLI, which scripts/setup-test.sh installs).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

/// A NATS JWT (`alg` ed25519-nkey) for `subject`, signed by `issuer`, with `nats` claims.
pub fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({ "typ": "JWT", "alg": "ed25519-nkey" });
    let mut claims = serde_json::json!({
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    // The id is a hash of the claims, as nsc makes it.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(serde_json::to_vec(&claims).unwrap());
    claims["jti"] = serde_json::Value::String(hex::encode_upper(&digest[..16]));
    let signed = format!("{}.{}", b64(&serde_json::to_vec(&header).unwrap()), b64(&serde_json::to_vec(&claims).unwrap()));
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}

/// A server in operator (JWT) mode: its configuration, and the `.creds` text of a user of a
/// JetStream-enabled account; `other_creds` is a user of an account the server does not know.
pub struct Operator {
    pub config: String,
    pub creds: String,
    pub foreign_creds: String,
}

fn account_claims(jetstream: bool) -> serde_json::Value {
    let mut limits = serde_json::json!({ "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1 });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer", "max_ack_pending", "mem_max_stream_bytes", "disk_max_stream_bytes"] {
            limits[key] = serde_json::json!(-1);
        }
    }
    serde_json::json!({ "limits": limits, "default_permissions": { "pub": {}, "sub": {} }, "type": "account", "version": 2 })
}

fn user_creds(account: &nkeys::KeyPair) -> String {
    let user = nkeys::KeyPair::new_user();
    let claims = serde_json::json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2 });
    let token = jwt(account, &user.public_key(), "app", claims);
    format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

impl Operator {
    pub fn new() -> Self {
        let operator = nkeys::KeyPair::new_operator();
        let operator_jwt = jwt(&operator, &operator.public_key(), "test", serde_json::json!({ "type": "operator", "version": 2 }));
        let system = nkeys::KeyPair::new_account();
        let system_jwt = jwt(&operator, &system.public_key(), "SYS", account_claims(false));
        let app = nkeys::KeyPair::new_account();
        let app_jwt = jwt(&operator, &app.public_key(), "APP", account_claims(true));
        let config = format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {sys}: {system_jwt}\n  {app_key}: {app_jwt}\n}}\n",
            sys = system.public_key(),
            app_key = app.public_key(),
        );
        Self { config, creds: user_creds(&app), foreign_creds: user_creds(&nkeys::KeyPair::new_account()) }
    }
}

/// A CA with a server certificate (for 127.0.0.1 and localhost) and a client certificate,
/// as PEM files in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/setup-test.sh installs it)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A self-signed CA named `name` in `dir`: `<name>.pem` and `<name>.key`.
pub fn ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", &format!("/CN={name}"), "-keyout", &key, "-out", &pem,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    dir.join(pem)
}

/// A certificate `name` signed by CA `ca` (as made by [`ca`]), with extensions `ext`.
fn leaf(dir: &Path, ca: &str, name: &str, ext: &str) -> (PathBuf, PathBuf) {
    let (pem, key, csr, cnf) = (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.cnf"));
    std::fs::write(dir.join(&cnf), ext).unwrap();
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", &format!("/CN={name}"), "-keyout", &key, "-out", &csr]);
    openssl(dir, &[
        "x509", "-req", "-in", &csr, "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial",
        "-days", "2", "-out", &pem, "-extfile", &cnf,
    ]);
    (dir.join(pem), dir.join(key))
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let ca = ca(dir, "ca");
        let (server_cert, server_key) = leaf(dir, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
        let (client_cert, client_key) = leaf(dir, "ca", "client", "extendedKeyUsage=clientAuth\n");
        Self { ca, server_cert, server_key, client_cert, client_key }
    }

    /// nats-server's `tls` block: this server certificate, clients verified against the CA.
    pub fn server_config(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
            self.server_cert.display().to_string(),
            self.server_key.display().to_string(),
            self.ca.display().to_string()
        )
    }
}
