//! The event a bucket change publishes: an S3 event notification with one record, as S3
//! sends it to Lambda, so a Lambda S3 handler parses it unchanged.

use aws_lambda_events::event::s3::{S3Bucket, S3Entity, S3Event, S3EventRecord, S3Object, S3RequestParameters, S3UserIdentity};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::Change;
use crate::event::Event;

/// CloudEvents `source` of bucket events.
pub const SOURCE: &str = "sluice.bucket";

/// One version of an object: what tells a change from a rescan of the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Size in bytes.
    pub size: u64,
    /// The entity tag without quotes: the content MD5 for a local file and for a simple S3
    /// put, the store's for multipart uploads.
    pub etag: String,
    /// What identifies this version: `<size>-<mtime ns>` for a local file, the etag for S3.
    pub id: String,
    /// Last modification.
    pub modified: DateTime<Utc>,
}

/// The object key encoded as S3 does in notifications: form encoding (a space is `+`),
/// with `/` left as is. `urllib.parse.unquote_plus` (Python) or `decodeURIComponent` after
/// replacing `+` (JavaScript) give the key back.
pub fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>().replace("%2F", "/")
}

/// The event id: trigger, key and version, so a rescan, a restart or a second node
/// publishing the same change is removed by JetStream's duplicate window. The trigger's name
/// is part of it so two triggers on one bucket both fire.
pub fn event_id(trigger: &str, change: Change, key: &str, version: &Version) -> String {
    format!("bucket:{trigger}:{}@{}:{}", encode_key(key), version.id, change.as_str())
}

/// What goes into a record besides the change itself.
pub struct Origin<'a> {
    pub trigger: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
}

/// The event for one change.
pub fn event(origin: &Origin<'_>, change: Change, key: &str, version: &Version, at: DateTime<Utc>) -> Event {
    let id = event_id(origin.trigger, change, key, version);
    let data = s3_event(origin, change, key, version, at, &id);
    let mut event = Event::new(SOURCE, format!("{SOURCE}.{}", change.as_str()), data);
    event.id = id;
    event.time = at;
    event.subject = Some(encode_key(key));
    event
}

/// The S3 notification JSON. Fields S3 leaves out (size and eTag of a deleted object, the
/// version id of an unversioned bucket) are left out.
fn s3_event(origin: &Origin<'_>, change: Change, key: &str, version: &Version, at: DateTime<Utc>, id: &str) -> Bytes {
    let principal = || {
        let mut who = S3UserIdentity::default();
        who.principal_id = Some("sluice".to_owned());
        who
    };
    let mut object = S3Object::default();
    object.key = Some(encode_key(key));
    if change == Change::Created {
        object.size = i64::try_from(version.size).ok();
        object.e_tag = Some(version.etag.clone());
    }
    // Hex, growing with time for one key, as S3's sequencer.
    let nanos = at.timestamp_nanos_opt().unwrap_or_default();
    object.sequencer = Some(format!("{nanos:016X}"));
    let mut bucket = S3Bucket::default();
    bucket.name = Some(origin.bucket.to_owned());
    bucket.owner_identity = Some(principal());
    bucket.arn = Some(format!("arn:aws:s3:::{}", origin.bucket));
    let mut entity = S3Entity::default();
    entity.schema_version = Some("1.0".to_owned());
    entity.configuration_id = Some(origin.trigger.to_owned());
    entity.bucket = bucket;
    entity.object = object;
    let mut parameters = S3RequestParameters::default();
    parameters.source_ip_address = Some("127.0.0.1".to_owned());
    let mut record = S3EventRecord::default();
    record.event_version = Some("2.1".to_owned());
    record.event_source = Some("aws:s3".to_owned());
    record.aws_region = Some(origin.region.to_owned());
    record.event_time = at;
    record.event_name = Some(
        match change {
            Change::Created => "ObjectCreated:Put",
            Change::Deleted => "ObjectRemoved:Delete",
        }
        .to_owned(),
    );
    record.principal_id = principal();
    record.request_parameters = parameters;
    record.response_elements = [("x-amz-request-id".to_owned(), id.to_owned())].into_iter().collect();
    record.s3 = entity;
    let mut notification = S3Event::default();
    notification.records = vec![record];

    let mut json = serde_json::to_value(&notification).unwrap_or_default();
    if let Some(object) = json.pointer_mut("/Records/0/s3/object").and_then(serde_json::Value::as_object_mut) {
        object.retain(|name, value| !value.is_null() && name != "urlDecodedKey");
    }
    Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> Version {
        Version { size: 11, etag: "5eb63bbbe01eeed093cb22bb8f5acdc3".into(), id: "11-1".into(), modified: Utc::now() }
    }

    #[test]
    fn keys_are_encoded_as_s3_does() {
        assert_eq!(encode_key("images/red flower.jpg"), "images/red+flower.jpg");
        assert_eq!(encode_key("a=b&c+d"), "a%3Db%26c%2Bd");
        assert_eq!(encode_key("über.txt"), "%C3%BCber.txt");
    }

    #[test]
    fn a_lambda_handler_parses_the_record() {
        let origin = Origin { trigger: "t", bucket: "uploads", region: "us-east-1" };
        let event = event(&origin, Change::Created, "docs/a b.txt", &version(), Utc::now());
        let parsed: S3Event = serde_json::from_slice(&event.data).unwrap();
        let record = &parsed.records[0];
        assert_eq!(record.event_name.as_deref(), Some("ObjectCreated:Put"));
        assert_eq!(record.event_source.as_deref(), Some("aws:s3"));
        assert_eq!(record.s3.bucket.name.as_deref(), Some("uploads"));
        assert_eq!(record.s3.object.key.as_deref(), Some("docs/a+b.txt"));
        assert_eq!(record.s3.object.size, Some(11));
        assert_eq!(record.s3.object.e_tag.as_deref(), Some("5eb63bbbe01eeed093cb22bb8f5acdc3"));
        let json: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
        assert!(json.pointer("/Records/0/s3/object/urlDecodedKey").is_none());
        assert!(json.pointer("/Records/0/s3/object/versionId").is_none());
    }

    #[test]
    fn deletes_carry_no_size_and_ids_differ_by_change() {
        let origin = Origin { trigger: "t", bucket: "uploads", region: "" };
        let deleted = event(&origin, Change::Deleted, "a.txt", &version(), Utc::now());
        let json: serde_json::Value = serde_json::from_slice(&deleted.data).unwrap();
        assert_eq!(json.pointer("/Records/0/eventName").unwrap(), "ObjectRemoved:Delete");
        assert!(json.pointer("/Records/0/s3/object/size").is_none());
        let created = event(&origin, Change::Created, "a.txt", &version(), Utc::now());
        assert_ne!(created.id, deleted.id);
        assert_eq!(created.id, event_id("t", Change::Created, "a.txt", &version()));
    }
}
