//! Where and how Sluice connects to NATS: seed URLs, one authentication method (user and
//! password, token, NKey, or a `.creds` file), TLS. Built once per command from
//! `[nats]` in sluice.toml, then `SLUICE_NATS_*` variables, then `--nats-*` flags, each
//! field overriding the one below; every connection Sluice makes uses it.
//!
//! Secrets (passwords, tokens, seeds, the credentials in a URL) never leave this module in
//! text: [`NatsTarget`]'s `Debug` hides them, and the URL it shows ([`NatsTarget::shown`])
//! has its `user:password@` redacted.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, NatsSettings};
use crate::error::UsageError;

/// A secret read from configuration: shown as `***` by `Debug`, never by `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How the connection authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// `user` and `password` (the password may be empty).
    UserPassword { user: String, password: Secret, from_url: bool },
    /// A token.
    Token { token: Secret, from_url: bool },
    /// An NKey: the seed read from `file` signs the server's nonce.
    NKey { file: PathBuf, seed: Secret, public_key: String },
    /// A `.creds` file: a user JWT and the seed that signs with it.
    Creds { file: PathBuf, text: Secret },
}

/// TLS files; TLS is required of the server once any is given.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM CA certificate(s) to trust, in place of the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    fn configured(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

/// Where Sluice connects to NATS and how: the seeds, the authentication, TLS.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// The seed URLs, comma-separated, without credentials (those are in `auth`).
    seeds: String,
    /// The seeds as given, credentials redacted: what messages and logs show.
    shown: String,
    auth: Auth,
    tls: Tls,
}

/// Where a setting came from, to name it in messages.
#[derive(Debug, Clone)]
enum Origin {
    /// `[nats] <field>` in this sluice.toml.
    File(PathBuf),
    /// `--nats-<field>` or `SLUICE_NATS_<FIELD>`.
    Override,
}

#[derive(Debug, Clone)]
struct Field<T> {
    name: &'static str,
    value: T,
    origin: Origin,
}

impl<T> Field<T> {
    /// `[nats] token in /p/sluice.toml` or `--nats-token / SLUICE_NATS_TOKEN`.
    fn describe(&self) -> String {
        match &self.origin {
            Origin::File(path) => format!("[nats] {} in {}", self.name, path.display()),
            Origin::Override => flag_and_env(self.name),
        }
    }

    /// An error about this field: a [`ConfigError`] when it came from sluice.toml, else a
    /// [`UsageError`]; both exit with 2.
    fn error(&self, message: String) -> anyhow::Error {
        match &self.origin {
            Origin::File(path) => ConfigError::new(path, Some(format!("nats.{}", self.name).as_str()), message).into(),
            Origin::Override => UsageError::new(format!("{}: {message}", flag_and_env(self.name))).into(),
        }
    }
}

/// `--nats-tls-ca / SLUICE_NATS_TLS_CA`.
fn flag_and_env(field: &str) -> String {
    format!("--nats-{} / SLUICE_NATS_{}", field.replace('_', "-"), field.to_uppercase())
}

/// Picks a field: the override (flag or env) if set, else sluice.toml's.
fn pick<T: Clone>(name: &'static str, over: Option<&T>, file: Option<&T>, file_path: &Path) -> Option<Field<T>> {
    match (over, file) {
        (Some(value), _) => Some(Field { name, value: value.clone(), origin: Origin::Override }),
        (None, Some(value)) => Some(Field { name, value: value.clone(), origin: Origin::File(file_path.to_path_buf()) }),
        (None, None) => None,
    }
}

/// Picks a path field; a path from sluice.toml is relative to the project directory, one
/// from a flag or variable to the current directory.
fn pick_path(name: &'static str, over: Option<&PathBuf>, file: Option<&PathBuf>, file_path: &Path, dir: &Path) -> Option<Field<PathBuf>> {
    pick(name, over, file, file_path).map(|mut field| {
        if matches!(field.origin, Origin::File(_)) {
            field.value = dir.join(&field.value);
        }
        field
    })
}

impl NatsTarget {
    /// A server that needs no credentials (the embedded one).
    pub fn plain(url: &str) -> Self {
        Self { seeds: url.to_owned(), shown: redact_url(url), auth: Auth::None, tls: Tls::default() }
    }

    /// Layers the connection settings: `file` (`[nats]` of `dir/sluice.toml`), then
    /// `over` (flags and `SLUICE_NATS_*`, which clap has merged) field by field; checks them
    /// and reads the files they name. `seeds` is the URL already chosen (its credentials,
    /// if any, are one more way to authenticate).
    pub fn resolve(seeds: &str, file: &NatsSettings, over: &NatsSettings, dir: &Path) -> anyhow::Result<Self> {
        let file_path = dir.join("sluice.toml");
        let file_path = file_path.as_path();
        let user = pick("user", over.user.as_ref(), file.user.as_ref(), file_path);
        let password = pick("password", over.password.as_ref(), file.password.as_ref(), file_path);
        let token = pick("token", over.token.as_ref(), file.token.as_ref(), file_path);
        let nkey = pick_path("nkey", over.nkey.as_ref(), file.nkey.as_ref(), file_path, dir);
        let creds = pick_path("creds", over.creds.as_ref(), file.creds.as_ref(), file_path, dir);
        let tls_ca = pick_path("tls_ca", over.tls_ca.as_ref(), file.tls_ca.as_ref(), file_path, dir);
        let tls_cert = pick_path("tls_cert", over.tls_cert.as_ref(), file.tls_cert.as_ref(), file_path, dir);
        let tls_key = pick_path("tls_key", over.tls_key.as_ref(), file.tls_key.as_ref(), file_path, dir);

        let (clean, url_auth) = split_url_credentials(seeds)?;
        let shown = redact_url(seeds);

        if let (Some(password), None) = (&password, &user) {
            return Err(password.error(format!(
                "a password needs a user: set [nats] user (or {}) too",
                flag_and_env("user")
            )));
        }
        // Exactly one way to authenticate.
        let mut methods: Vec<(String, Option<&Origin>)> = Vec::new();
        if let Some(user) = &user {
            methods.push((format!("{} (user and password)", user.describe()), Some(&user.origin)));
        }
        if let Some(token) = &token {
            methods.push((format!("{} (token)", token.describe()), Some(&token.origin)));
        }
        if let Some(nkey) = &nkey {
            methods.push((format!("{} (NKey)", nkey.describe()), Some(&nkey.origin)));
        }
        if let Some(creds) = &creds {
            methods.push((format!("{} (credentials file)", creds.describe()), Some(&creds.origin)));
        }
        if url_auth.is_some() {
            methods.push((format!("the credentials in the NATS URL {shown}"), None));
        }
        if methods.len() > 1 {
            let names: Vec<&str> = methods.iter().map(|(name, _)| name.as_str()).collect();
            let message = format!(
                "{} are {} ways to authenticate to NATS; give only one (see docs/nats.md)",
                names.join(" and "),
                methods.len()
            );
            let file_origin = methods.iter().find_map(|(_, origin)| match origin {
                Some(Origin::File(path)) => Some(path.clone()),
                _ => None,
            });
            return Err(match file_origin {
                Some(path) => ConfigError::new(&path, Some("nats"), message).into(),
                None => UsageError::new(message).into(),
            });
        }

        let auth = if let Some(user) = user {
            let password = password.map(|p| p.value).unwrap_or_default();
            Auth::UserPassword { user: user.value, password: Secret(password), from_url: false }
        } else if let Some(token) = token {
            if token.value.is_empty() {
                return Err(token.error("is empty; give the token, or remove the setting".to_owned()));
            }
            Auth::Token { token: Secret(token.value), from_url: false }
        } else if let Some(nkey) = nkey {
            let text = read_file(&nkey, "an NKey seed file (as `nk -gen user` writes)")?;
            let found = text.lines().map(str::trim).find_map(|line| nkeys::KeyPair::from_seed(line).ok().map(|pair| (line, pair)));
            let Some((seed, pair)) = found else {
                return Err(nkey.error(format!(
                    "{} holds no NKey seed (a line starting with \"SU\"); give the user's seed file, not its public key",
                    nkey.value.display()
                )));
            };
            Auth::NKey { file: nkey.value.clone(), seed: Secret(seed.to_owned()), public_key: pair.public_key() }
        } else if let Some(creds) = creds {
            let text = read_file(&creds, "a .creds file (as `nsc generate creds` writes)")?;
            if let Err(error) = async_nats::ConnectOptions::with_credentials(&text) {
                return Err(creds.error(format!(
                    "{} is not a NATS credentials file ({error}); it must hold a user JWT and its NKey seed, as `nsc generate creds` writes",
                    creds.value.display()
                )));
            }
            Auth::Creds { file: creds.value.clone(), text: Secret(text) }
        } else {
            url_auth.unwrap_or(Auth::None)
        };

        let client = match (tls_cert, tls_key) {
            (None, None) => None,
            (Some(cert), None) => {
                return Err(cert.error(format!("a client certificate needs its key: set [nats] tls_key (or {}) too", flag_and_env("tls_key"))))
            }
            (None, Some(key)) => {
                return Err(key.error(format!("a client key needs its certificate: set [nats] tls_cert (or {}) too", flag_and_env("tls_cert"))))
            }
            (Some(cert), Some(key)) => {
                read_file(&cert, "a PEM certificate")?;
                read_file(&key, "a PEM private key")?;
                Some((cert.value, key.value))
            }
        };
        let ca = match tls_ca {
            Some(ca) => {
                read_file(&ca, "a PEM CA certificate")?;
                Some(ca.value)
            }
            None => None,
        };
        Ok(Self { seeds: clean, shown, auth, tls: Tls { ca, client } })
    }

    /// The seeds with their credentials redacted, for messages and logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The seed URLs to connect to, without credentials.
    pub fn addrs(&self) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
        super::server_addrs(&self.seeds)
    }

    /// `options` with this target's authentication and TLS.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> anyhow::Result<async_nats::ConnectOptions> {
        install_crypto_provider();
        let mut options = match &self.auth {
            Auth::None => options,
            Auth::UserPassword { user, password, .. } => options.user_and_password(user.clone(), password.expose().to_owned()),
            Auth::Token { token, .. } => options.token(token.expose().to_owned()),
            Auth::NKey { seed, .. } => options.nkey(seed.expose().to_owned()),
            Auth::Creds { file, text } => options
                .credentials(text.expose())
                .map_err(|e| UsageError::new(format!("{} is not a NATS credentials file: {e}", file.display())))?,
        };
        if let Some(ca) = &self.tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.configured() {
            options = options.require_tls(true);
        }
        Ok(options)
    }

    /// Says why a connection failed, and what to do, for the failures a configuration
    /// causes: refused credentials, TLS; anything else is an unreachable server.
    pub fn explain(&self, error: async_nats::ConnectError) -> anyhow::Error {
        use async_nats::ConnectErrorKind as Kind;
        let url = &self.shown;
        let kind = error.kind();
        let tls = tls_cause(&error);
        let message = match (kind, tls) {
            (Kind::AuthorizationViolation, _) => {
                format!("NATS at {url} refused the credentials (authorization violation): {}", self.auth_hint())
            }
            (Kind::Authentication, _) => format!(
                "cannot sign the NATS server's challenge with the configured key ({error}): {}",
                self.auth_hint()
            ),
            (_, Some(TlsCause::Untrusted(detail))) => {
                let trust = match &self.tls.ca {
                    Some(ca) => format!("the CA in {} ([nats] tls_ca)", ca.display()),
                    None => "the system's trusted roots (no [nats] tls_ca is set)".to_owned(),
                };
                format!(
                    "TLS with NATS at {url} failed: the server's certificate is not trusted ({detail}); it was checked against {trust}. \
                     Set [nats] tls_ca (or {}) to the PEM file of the CA that signed the server's certificate, and connect by the \
                     host name the certificate is for",
                    flag_and_env("tls_ca")
                )
            }
            (_, Some(TlsCause::Refused(detail))) => {
                let client = match &self.tls.client {
                    Some((cert, _)) => format!("the client certificate {} ([nats] tls_cert) was not accepted", cert.display()),
                    None => format!("no client certificate was given: set [nats] tls_cert and tls_key (or {} and {})", flag_and_env("tls_cert"), flag_and_env("tls_key")),
                };
                format!("TLS with NATS at {url} failed: the server refused the handshake ({detail}); {client}")
            }
            (_, Some(TlsCause::NotTls(detail))) => format!(
                "TLS with NATS at {url} failed: the server does not speak TLS ({detail}); enable TLS on the server, or remove \
                 [nats] tls_ca, tls_cert and tls_key"
            ),
            (Kind::Tls, _) | (_, Some(TlsCause::Other(_))) => {
                let detail = tls_cause(&error).map_or_else(|| chain(&error), |cause| cause.detail());
                format!(
                    "TLS with NATS at {url} failed ({detail}): check that [nats] tls_ca, tls_cert and tls_key name readable PEM files \
                     (a CA certificate, the client certificate and its key)"
                )
            }
            (Kind::TimedOut, _) => {
                return anyhow::Error::new(error)
                    .context(format!("NATS at {url} did not answer in time: is the address right and the server up?"))
            }
            _ => {
                return anyhow::Error::new(error).context(format!(
                    "cannot reach NATS at {url}: is the server running? (`sluice up` starts one; or pass --nats URL)"
                ))
            }
        };
        // The server's refusal is a fact about the configuration: exit 2.
        UsageError::new(message).into()
    }

    /// What to check when the server refused the credentials.
    fn auth_hint(&self) -> String {
        match &self.auth {
            Auth::None => format!(
                "the server requires credentials and none are configured: set [nats] user and password, token, nkey or creds \
                 (or {}/{}, {}, {}, {})",
                env("user"),
                env("password"),
                env("token"),
                env("nkey"),
                env("creds")
            ),
            Auth::UserPassword { from_url: true, .. } | Auth::Token { from_url: true, .. } => {
                "check the credentials in the NATS URL (nats://USER:PASSWORD@HOST:PORT)".to_owned()
            }
            Auth::UserPassword { .. } => {
                format!("check [nats] user and password (or {}/{})", env("user"), env("password"))
            }
            Auth::Token { .. } => format!("check [nats] token (or {})", env("token")),
            Auth::NKey { file, public_key, .. } => format!(
                "check that the server lists the public key {public_key} of the seed in {} ([nats] nkey or {})",
                file.display(),
                env("nkey")
            ),
            Auth::Creds { file, .. } => format!(
                "check [nats] creds (or {}): {} must hold a user JWT signed by an account the server trusts, not expired or revoked",
                env("creds"),
                file.display()
            ),
        }
    }
}

/// Chooses rustls' cryptography for the process (ring, async-nats' own): several crates
/// enable both of rustls' providers, and then rustls picks none and a TLS connection panics.
/// A server may ask for TLS when none is configured, so this runs before every connection.
pub fn install_crypto_provider() {
    // Already installed (by an earlier connection, or by another part of the process): fine.
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}

/// `SLUICE_NATS_TOKEN`.
fn env(field: &str) -> String {
    format!("SLUICE_NATS_{}", field.to_uppercase())
}

/// Reads a file a setting names, with an error naming the setting, the path and what the
/// file should be.
fn read_file(field: &Field<PathBuf>, what: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(&field.value).map_err(|e| {
        field.error(format!("cannot read {} ({e}); it should be {what}", field.value.display()))
    })?;
    String::from_utf8(bytes).map_err(|_| field.error(format!("{} is not text; it should be {what}", field.value.display())))
}

/// Why a TLS handshake failed, from the error's causes.
enum TlsCause {
    /// The server's certificate did not verify.
    Untrusted(String),
    /// The server sent an alert: it refused us (no or a bad client certificate).
    Refused(String),
    /// What came back was not TLS.
    NotTls(String),
    Other(String),
}

impl TlsCause {
    fn detail(&self) -> String {
        match self {
            Self::Untrusted(d) | Self::Refused(d) | Self::NotTls(d) | Self::Other(d) => d.clone(),
        }
    }
}

/// The TLS error among `error`'s causes. An `io::Error` hides the error it wraps from
/// `source()`, so each is opened with `get_ref`.
fn tls_cause(error: &async_nats::ConnectError) -> Option<TlsCause> {
    use async_nats::rustls::Error as Rustls;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = cause {
        let inner = current.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|e| e as &(dyn std::error::Error + 'static));
        for candidate in [Some(current), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<Rustls>() {
                let detail = tls.to_string();
                return Some(match tls {
                    Rustls::InvalidCertificate(_) => TlsCause::Untrusted(detail),
                    Rustls::AlertReceived(_) => TlsCause::Refused(detail),
                    Rustls::InvalidMessage(_) | Rustls::InappropriateMessage { .. } | Rustls::InappropriateHandshakeMessage { .. } => {
                        TlsCause::NotTls(detail)
                    }
                    _ => TlsCause::Other(detail),
                });
            }
        }
        cause = inner.and_then(|inner| inner.source()).or_else(|| current.source());
    }
    None
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

/// The seeds with each `user:password@` shown as `user:***@` and a lone `token@` as
/// `***@`; everything Sluice prints or logs about a URL goes through this.
pub fn redact_url(seeds: &str) -> String {
    seeds.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let hidden = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}{hidden}{}", &rest[at..])
}

/// Takes the credentials out of the seeds: the URLs without them, and the authentication
/// they give (`user:password@` or `token@`). Seeds with different credentials are refused.
fn split_url_credentials(seeds: &str) -> anyhow::Result<(String, Option<Auth>)> {
    let mut clean = Vec::new();
    let mut found: Option<(String, Option<String>)> = None;
    for part in seeds.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, rest) = match part.find("://") {
            Some(at) => part.split_at(at + 3),
            None => ("", part),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            clean.push(part.to_owned());
            continue;
        };
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = match rest[..at].split_once(':') {
            Some((user, password)) => (decode(user), Some(decode(password))),
            None => (decode(&rest[..at]), None),
        };
        if found.as_ref().is_some_and(|seen| *seen != credentials) {
            return Err(UsageError::new(format!(
                "the NATS URLs {} carry different credentials; give them once (in one URL, or in [nats] user and password)",
                redact_url(seeds)
            ))
            .into());
        }
        found = Some(credentials);
        clean.push(format!("{scheme}{}", &rest[at + 1..]));
    }
    let auth = found.map(|(user, password)| match password {
        Some(password) => Auth::UserPassword { user, password: Secret(password), from_url: true },
        None => Auth::Token { token: Secret(user), from_url: true },
    });
    Ok((clean.join(","), auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> NatsSettings {
        let settings: crate::config::Settings = toml::from_str(text).unwrap();
        settings.nats
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        assert_eq!(redact_url("nats://alice:s3cr3t@a:4222"), "nats://alice:***@a:4222");
        assert_eq!(redact_url("nats://t0ken@a:4222,tls://b:4223"), "nats://***@a:4222,tls://b:4223");
        assert_eq!(redact_url("alice:p@ss@a:4222"), "alice:***@a:4222");
        assert_eq!(redact_url("nats://a:4222"), "nats://a:4222");
        let dir = tempfile::tempdir().unwrap();
        let target = NatsTarget::resolve("nats://alice:s3cr3t@127.0.0.1:4222", &NatsSettings::default(), &NatsSettings::default(), dir.path()).unwrap();
        assert_eq!(target.shown(), "nats://alice:***@127.0.0.1:4222");
        assert_eq!(target.seeds, "nats://127.0.0.1:4222", "the client gets the URL without its credentials");
        let shown = format!("{target:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("alice"), "{shown}");
        let token = NatsTarget::resolve("nats://t0k3n@127.0.0.1:4222", &NatsSettings::default(), &NatsSettings::default(), dir.path()).unwrap();
        assert!(matches!(&token.auth, Auth::Token { token, from_url: true } if token.expose() == "t0k3n"));
        assert!(!format!("{token:?}").contains("t0k3n"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = settings("[nats]\nuser = \"alice\"\npassword = \"s3cr3t\"\n");
        let target = NatsTarget::resolve("nats://127.0.0.1:4222", &file, &NatsSettings::default(), dir.path()).unwrap();
        let shown = format!("{target:?} {file:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let token = NatsTarget::resolve("nats://a:4222", &settings("[nats]\ntoken = \"t0k3n\"\n"), &NatsSettings::default(), dir.path()).unwrap();
        assert!(!format!("{token:?}").contains("t0k3n"));
    }

    #[test]
    fn flags_and_env_override_the_file_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = settings("[nats]\nuser = \"alice\"\npassword = \"from-file\"\n");
        let over = NatsSettings { password: Some("from-env".into()), ..Default::default() };
        let target = NatsTarget::resolve("nats://a:4222", &file, &over, dir.path()).unwrap();
        let Auth::UserPassword { user, password, from_url: false } = &target.auth else { panic!("{target:?}") };
        assert_eq!((user.as_str(), password.expose()), ("alice", "from-env"));
        let over = NatsSettings { user: Some("bob".into()), ..Default::default() };
        let target = NatsTarget::resolve("nats://a:4222", &file, &over, dir.path()).unwrap();
        assert!(matches!(&target.auth, Auth::UserPassword { user, .. } if user == "bob"));
    }

    #[test]
    fn relative_files_in_sluice_toml_are_in_the_project() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "pem").unwrap();
        let file = settings("[nats]\ntls_ca = \"ca.pem\"\n");
        let target = NatsTarget::resolve("nats://a:4222", &file, &NatsSettings::default(), dir.path()).unwrap();
        assert_eq!(target.tls.ca.as_deref(), Some(dir.path().join("ca.pem").as_path()));
    }

    #[test]
    fn bad_combinations_are_refused_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let check = |file: &str, over: NatsSettings, url: &str, words: &[&str], from_file: bool| {
            let error = NatsTarget::resolve(url, &settings(file), &over, dir.path()).unwrap_err();
            let text = format!("{error:#}");
            for word in words {
                assert!(text.contains(word), "{word:?} not in {text}");
            }
            assert_eq!(crate::error::exit_code(&error), 2, "{text}");
            assert_eq!(error.is::<ConfigError>(), from_file, "{text}");
            assert!(!text.contains("s3cr3t"), "{text}");
        };
        check("[nats]\ntoken = \"s3cr3t\"\nuser = \"alice\"\n", NatsSettings::default(), "nats://a:4222", &["[nats] user", "[nats] token", "give only one"], true);
        check("", NatsSettings { token: Some("s3cr3t".into()), user: Some("alice".into()), ..Default::default() }, "nats://a:4222", &["--nats-token / SLUICE_NATS_TOKEN", "--nats-user"], false);
        check("[nats]\ncreds = \"x.creds\"\nnkey = \"x.nk\"\n", NatsSettings::default(), "nats://a:4222", &["[nats] nkey", "[nats] creds"], true);
        check("[nats]\ntoken = \"s3cr3t\"\n", NatsSettings::default(), "nats://bob:s3cr3t@a:4222", &["URL nats://bob:***@a:4222", "[nats] token"], true);
        check("[nats]\npassword = \"s3cr3t\"\n", NatsSettings::default(), "nats://a:4222", &["nats.password", "needs a user"], true);
        check("", NatsSettings { password: Some("s3cr3t".into()), ..Default::default() }, "nats://a:4222", &["--nats-password / SLUICE_NATS_PASSWORD", "needs a user"], false);
        check("[nats]\nnkey = \"missing.nk\"\n", NatsSettings::default(), "nats://a:4222", &["nats.nkey", "missing.nk", "cannot read"], true);
        check("[nats]\ncreds = \"missing.creds\"\n", NatsSettings::default(), "nats://a:4222", &["nats.creds", "missing.creds", "cannot read"], true);
        check("[nats]\ntls_cert = \"c.pem\"\n", NatsSettings::default(), "nats://a:4222", &["nats.tls_cert", "tls_key"], true);
        check("", NatsSettings { tls_key: Some("k.pem".into()), ..Default::default() }, "nats://a:4222", &["--nats-tls-key", "tls_cert"], false);
        check("[nats]\ntls_ca = \"nothere.pem\"\n", NatsSettings::default(), "nats://a:4222", &["nats.tls_ca", "nothere.pem", "cannot read"], true);
        std::fs::write(dir.path().join("public.nk"), "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4\n").unwrap();
        check("[nats]\nnkey = \"public.nk\"\n", NatsSettings::default(), "nats://a:4222", &["nats.nkey", "holds no NKey seed"], true);
        std::fs::write(dir.path().join("bad.creds"), "hello\n").unwrap();
        check("[nats]\ncreds = \"bad.creds\"\n", NatsSettings::default(), "nats://a:4222", &["nats.creds", "not a NATS credentials file"], true);
        check("", NatsSettings::default(), "nats://a:s3cr3t@h:1,nats://b:other@h:2", &["different credentials", "nats://a:***@h:1"], false);
    }

    #[test]
    fn an_nkey_seed_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let pair = nkeys::KeyPair::new_user();
        std::fs::write(dir.path().join("user.nk"), format!("{}\n", pair.seed().unwrap())).unwrap();
        let target = NatsTarget::resolve("nats://a:4222", &settings("[nats]\nnkey = \"user.nk\"\n"), &NatsSettings::default(), dir.path()).unwrap();
        let Auth::NKey { public_key, .. } = &target.auth else { panic!("{target:?}") };
        assert_eq!(public_key, &pair.public_key());
        assert!(!format!("{target:?}").contains(&pair.seed().unwrap()));
    }
}
