//! The S3 test fixture: a real SeaweedFS server with signature authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::s3::S3Server;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

#[tokio::test]
async fn s3_server_stores_lists_and_deletes_with_authentication() {
    let server = S3Server::start();
    server.create_bucket("sluice-test").await;
    let store = server.client("sluice-test");

    let path = Path::from("dir/object.txt");
    let put = store.put(&path, PutPayload::from_static(b"hello")).await.unwrap();
    let e_tag = put.e_tag.clone().expect("PUT returns an ETag");
    // A simple PUT's ETag is the quoted MD5 of the body, as on AWS.
    assert_eq!(e_tag, "\"5d41402abc4b2a76b9719d911017c592\"");

    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].location, path);
    assert_eq!(listed[0].size, 5);
    assert_eq!(listed[0].e_tag.as_deref(), Some(e_tag.as_str()));
    assert_eq!(store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"hello");

    store.delete(&path).await.unwrap();
    let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");

    let wrong = server.client_with_secret("sluice-test", "not-the-secret");
    let error = wrong.put(&path, PutPayload::from_static(b"nope")).await.unwrap_err();
    assert!(error.to_string().contains("SignatureDoesNotMatch"), "{error}");
    let error = wrong.list(None).try_collect::<Vec<_>>().await.unwrap_err();
    assert!(error.to_string().contains("SignatureDoesNotMatch"), "{error}");
}
