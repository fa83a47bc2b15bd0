//! `kind = "bucket"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::triggers::Target;

/// A watched bucket: a local folder `buckets/<bucket>/`, or a bucket of an S3-compatible
/// store when `endpoint` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Always "bucket".
    pub kind: String,
    /// The bucket's name: the folder under `buckets/`, or the S3 bucket.
    pub bucket: String,
    /// URL of an S3-compatible store ("http://127.0.0.1:8333"). Default none: a local bucket.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region of the S3 store, also the records' `awsRegion`. Default "us-east-1".
    #[serde(default)]
    pub region: Option<String>,
    /// Environment variables holding the S3 credentials. Default `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and (if set) `AWS_SESSION_TOKEN`.
    #[serde(default)]
    pub credentials: Credentials,
    /// What fires: `created`, `deleted`. Default `["created"]`.
    #[serde(default = "default_events")]
    pub events: Vec<Change>,
    /// Only keys starting with this ("images/").
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only keys ending with this (".png").
    #[serde(default)]
    pub suffix: Option<String>,
    /// How often an S3 bucket is listed to find changes. Default 10s.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a local file must stay untouched after it was closed before it fires, so a
    /// writer that closes and reopens the file fires once. Default 200ms.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Whether objects already in the bucket when the trigger first starts fire (`fire`) or
    /// are taken as the baseline (`skip`). Default `fire` for local buckets (files dropped
    /// before the first `sluice up`), `skip` for S3 buckets (which may hold millions).
    #[serde(default)]
    pub existing: Option<Existing>,
    /// Topic to publish to. Exactly one of `topic` and `function`.
    pub topic: Option<String>,
    /// Function to deliver to directly.
    pub function: Option<String>,
}

/// The names of the environment variables holding S3 credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default = "default_access_key_env")]
    pub access_key_id_env: String,
    #[serde(default = "default_secret_key_env")]
    pub secret_access_key_env: String,
    #[serde(default = "default_session_token_env")]
    pub session_token_env: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            access_key_id_env: default_access_key_env(),
            secret_access_key_env: default_secret_key_env(),
            session_token_env: default_session_token_env(),
        }
    }
}

/// What happens to the objects found at the first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    Fire,
    Skip,
}

/// A kind of change to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Deleted => "deleted",
        }
    }
}

fn default_events() -> Vec<Change> {
    vec![Change::Created]
}
const fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
const fn default_settle() -> Duration {
    Duration::from_millis(200)
}
fn default_access_key_env() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}
fn default_secret_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}
fn default_session_token_env() -> String {
    "AWS_SESSION_TOKEN".to_owned()
}

impl BucketConfig {
    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    /// Whether a key passes the prefix and suffix filters.
    pub fn matches(&self, key: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| key.starts_with(p)) && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }

    /// Whether objects found at the first start fire (see `existing`).
    pub fn fires_existing(&self) -> bool {
        self.existing.map_or(self.endpoint.is_none(), |e| e == Existing::Fire)
    }

    pub fn fires(&self, change: Change) -> bool {
        self.events.contains(&change)
    }

    /// Where it watches, for listings: `buckets/uploads/` or `s3://uploads at URL`.
    pub fn source(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("s3://{} at {endpoint}", self.bucket),
            None => format!("buckets/{}/", self.bucket),
        }
    }

    /// Semantic checks; the offending field and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if let Err(m) = crate::config::validate_bucket(&self.bucket) {
            return field("bucket", m);
        }
        if let Some(endpoint) = &self.endpoint {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let host = endpoint.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() {
                return field("endpoint", format!("{endpoint:?} is not an http:// or https:// URL of an S3-compatible store"));
            }
        } else if self.region.is_some() {
            return field("region", "only applies to S3 buckets: set `endpoint` too, or remove `region`".to_owned());
        }
        if self.events.is_empty() {
            return field("events", "is empty: list at least one of \"created\", \"deleted\"".to_owned());
        }
        if self.poll_interval < Duration::from_millis(100) {
            return field("poll_interval", format!("{:?} is too short: use at least 100ms", self.poll_interval));
        }
        if self.settle > Duration::from_secs(60) {
            return field("settle", format!("{:?} is too long: use at most 60s", self.settle));
        }
        crate::triggers::check_target(&self.topic, &self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BucketConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_filters() {
        let c = parse("kind = \"bucket\"\nbucket = \"uploads\"\ntopic = \"uploads.created\"\n");
        assert_eq!(c.events, vec![Change::Created]);
        assert!(c.check().is_ok());
        assert!(c.fires(Change::Created) && !c.fires(Change::Deleted));
        let c = parse("kind = \"bucket\"\nbucket = \"u\"\nprefix = \"img/\"\nsuffix = \".png\"\nfunction = \"f\"\n");
        assert!(c.matches("img/a.png"));
        assert!(!c.matches("img/a.jpg"));
        assert!(!c.matches("doc/a.png"));
    }

    #[test]
    fn checks_name_the_field() {
        let c = parse("kind = \"bucket\"\nbucket = \"Up\"\ntopic = \"t\"\n");
        assert_eq!(c.check().unwrap_err().0, "bucket");
        let c = parse("kind = \"bucket\"\nbucket = \"u\"\nendpoint = \"localhost:9000\"\ntopic = \"t\"\n");
        assert_eq!(c.check().unwrap_err().0, "endpoint");
        let c = parse("kind = \"bucket\"\nbucket = \"u\"\nevents = []\ntopic = \"t\"\n");
        assert_eq!(c.check().unwrap_err().0, "events");
        let c = parse("kind = \"bucket\"\nbucket = \"u\"\n");
        assert_eq!(c.check().unwrap_err().0, "topic");
        assert!(toml::from_str::<BucketConfig>("kind = \"bucket\"\nbucket = \"u\"\nevents = [\"changed\"]\ntopic = \"t\"\n").is_err());
    }
}
