//! Local buckets (`buckets/<name>/`, watched with inotify): a file fires once, when it is
//! complete; files dropped while `sluice up` was down fire at the next start and nothing
//! fires twice; moves fire; prefix/suffix filters and `events` hold; a function sees only the
//! buckets granted to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// `wordcount` granted `uploads` (read-only) and `reports` (read-write), fired for every file
/// dropped in `uploads`.
fn wordcount_project() -> Project {
    let project = Project::new();
    project.function(
        "wordcount",
        "wordcount",
        "concurrency = 16\ntimeout = \"10s\"\nbuckets = [\"uploads:ro\", \"reports:rw\"]\n",
    );
    write_trigger(&project, "uploads", "kind = \"bucket\"\nbucket = \"uploads\"\nfunction = \"wordcount\"\n");
    project
}

fn write_trigger(project: &Project, name: &str, text: &str) {
    project.trigger(name, text);
}

fn bucket(project: &Project, name: &str) -> PathBuf {
    let dir = project.path().join("buckets").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The S3 records in SLUICE_EVENTS: (subject, eventName, key, size).
async fn records(js: &async_nats::jetstream::Context) -> Vec<(String, String, String, Option<u64>)> {
    stream_messages(js, "SLUICE_EVENTS")
        .await
        .into_iter()
        .map(|m| {
            let data: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let record = &data["Records"][0];
            (
                m.subject.to_string(),
                record["eventName"].as_str().unwrap().to_owned(),
                record["s3"]["object"]["key"].as_str().unwrap().to_owned(),
                record["s3"]["object"]["size"].as_u64(),
            )
        })
        .collect()
}

/// Results of wordcount as key → bytes it read.
fn counted(results: &Results) -> Vec<(String, u64)> {
    results
        .received
        .iter()
        .flat_map(|(_, body)| body["reports"].as_array().cloned().unwrap_or_default())
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r["bytes"].as_u64().unwrap()))
        .collect()
}

/// Writes `size` bytes in `chunks` pieces through one open handle, pausing between them.
fn write_slowly(path: &Path, size: usize, chunks: usize, pause: Duration) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![b'x'; size / chunks];
    for i in 0..chunks {
        file.write_all(&chunk).unwrap();
        file.write_all(b"\n").unwrap();
        file.flush().unwrap();
        if i + 1 < chunks {
            // Part of the scenario: a writer slower than `settle`, leaving a partial file.
            std::thread::sleep(pause);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_file_fires_once_when_complete() {
    let nats = NatsServer::start();
    let project = wordcount_project();
    let uploads = bucket(&project, "uploads");
    let _up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "wordcount").await;

    // 190 small files written at once by 4 writers, and 10 large ones written slowly in
    // chunks, pausing longer than `settle` (each chunk a partial file that must not fire).
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut writers = Vec::new();
    for w in 0..4 {
        let uploads = uploads.clone();
        writers.push(std::thread::spawn(move || {
            for i in (w..190).step_by(4) {
                std::fs::write(uploads.join(format!("small-{i:03}.txt")), format!("file {i} has some words\n")).unwrap();
            }
        }));
    }
    for i in 0..10 {
        let uploads = uploads.clone();
        writers.push(std::thread::spawn(move || {
            write_slowly(&uploads.join(format!("large-{i}.txt")), 1024 * 1024 + i * 4096, 8, Duration::from_millis(300));
        }));
    }
    for writer in writers {
        writer.join().unwrap();
    }
    for entry in std::fs::read_dir(&uploads).unwrap() {
        let entry = entry.unwrap();
        expected.insert(entry.file_name().into_string().unwrap(), entry.metadata().unwrap().len());
    }
    assert_eq!(expected.len(), 200);

    results.wait_for(200, Duration::from_secs(60)).await;
    // A short quiet period, five times the 200ms settle time: a file fired a second time
    // (say, once per chunk) would arrive within it and fail the count below.
    results.drain(Duration::from_secs(1)).await;
    let counted = counted(&results);
    assert_eq!(counted.len(), 200, "exactly one invocation per file");
    let by_key: BTreeMap<String, u64> = counted.into_iter().collect();
    assert_eq!(by_key, expected, "each invocation read the whole, final file");

    // Each event was made after its file was complete: its size is the final one.
    let js = async_nats::jetstream::new(client);
    let records = records(&js).await;
    assert_eq!(records.len(), 200, "one event per file");
    for (subject, name, key, size) in &records {
        assert_eq!(subject, "sluice.direct.wordcount");
        assert_eq!(name, "ObjectCreated:Put");
        assert_eq!(Some(expected[key]), *size, "{key} fired before it was complete");
    }
    // The granted function wrote its summaries into the read-write bucket.
    let reports = project.path().join("buckets/reports");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.join("large-3.txt.json")).unwrap()).unwrap();
    assert_eq!(summary["bytes"].as_u64(), Some(expected["large-3.txt"]));
    assert_eq!(summary["lines"].as_u64(), Some(8));
    assert_eq!(std::fs::read_dir(&reports).unwrap().count(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_dropped_while_down_fire_at_restart_and_nothing_fires_twice() {
    let nats = NatsServer::start();
    let project = wordcount_project();
    let uploads = bucket(&project, "uploads");
    let client = nats.client().await;
    let mut results = Results::subscribe(&client, "wordcount").await;

    let mut up = project.up(Some(&nats.url()));
    for i in 0..5 {
        std::fs::write(uploads.join(format!("before-{i}.txt")), "handled before the crash\n").unwrap();
    }
    results.wait_for(5, Duration::from_secs(30)).await;
    up.kill();

    for i in 0..20 {
        std::fs::write(uploads.join(format!("while-down-{i:02}.txt")), format!("dropped while down {i}\n")).unwrap();
    }
    // One handled file changes while down: a new version fires; the others stay quiet.
    std::fs::write(uploads.join("before-0.txt"), "changed while down, longer now\n").unwrap();

    let _up = project.up(Some(&nats.url()));
    results.wait_for(5 + 21, Duration::from_secs(30)).await;
    // A short quiet period: an unchanged file fired again by the restart's listing would
    // arrive within it and fail the count below.
    results.drain(Duration::from_secs(1)).await;
    let keys: Vec<String> = counted(&results).into_iter().map(|(k, _)| k).collect();
    let after: BTreeSet<&str> = keys[5..].iter().map(String::as_str).collect();
    let mut expected: BTreeSet<String> = (0..20).map(|i| format!("while-down-{i:02}.txt")).collect();
    expected.insert("before-0.txt".into());
    assert_eq!(keys.len(), 26, "nothing fired twice: {keys:?}");
    assert_eq!(after, expected.iter().map(String::as_str).collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn moves_fire_filters_hold_and_deletes_fire_only_when_asked() {
    let nats = NatsServer::start();
    let project = Project::new();
    write_trigger(
        &project,
        "pngs",
        "kind = \"bucket\"\nbucket = \"media\"\nprefix = \"images/\"\nsuffix = \".png\"\nevents = [\"created\", \"deleted\"]\ntopic = \"media.pngs\"\n",
    );
    write_trigger(&project, "everything", "kind = \"bucket\"\nbucket = \"media\"\ntopic = \"media.all\"\n");
    let media = bucket(&project, "media");
    std::fs::create_dir_all(media.join("images")).unwrap();
    std::fs::create_dir_all(media.join("docs")).unwrap();
    let _up = project.up(Some(&nats.url()));
    let js = async_nats::jetstream::new(nats.client().await);

    std::fs::write(media.join("images/a.png"), "png a").unwrap();
    std::fs::write(media.join("images/b.jpg"), "jpg b").unwrap();
    std::fs::write(media.join("docs/c.png"), "png c").unwrap();
    std::fs::write(media.join("images/.hidden.png"), "hidden").unwrap();
    std::fs::write(media.join("images/editing.png.swp"), "swap").unwrap();
    // A download finishing under a temporary name, then renamed.
    std::fs::write(media.join("images/d.png.part"), "png d").unwrap();
    std::fs::rename(media.join("images/d.png.part"), media.join("images/d.png")).unwrap();
    // Moved in from outside the bucket (same file system).
    let outside = project.path().join("outside.png");
    std::fs::write(&outside, "png e").unwrap();
    std::fs::rename(&outside, media.join("images/e.png")).unwrap();
    // A whole folder moved in.
    let folder = project.path().join("batch");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("f.png"), "png f").unwrap();
    std::fs::rename(&folder, media.join("images/batch")).unwrap();

    wait_stream_count(&js, "SLUICE_EVENTS", 4 + 6, Duration::from_secs(20)).await;
    std::fs::remove_file(media.join("images/a.png")).unwrap();
    std::fs::remove_file(media.join("docs/c.png")).unwrap();
    wait_stream_count(&js, "SLUICE_EVENTS", 11, Duration::from_secs(20)).await;
    // A short quiet period, five times the 200ms settle time: a change fired twice (or a
    // filtered file fired late) would arrive within it and fail the comparison below.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fired: BTreeSet<(String, String, String)> = records(&js).await.into_iter().map(|(s, n, k, _)| (s, n, k)).collect();
    let expect = |topic: &str, name: &str, key: &str| (format!("sluice.events.{topic}"), name.to_owned(), key.to_owned());
    let expected: BTreeSet<_> = [
        expect("media.pngs", "ObjectCreated:Put", "images/a.png"),
        expect("media.pngs", "ObjectCreated:Put", "images/d.png"),
        expect("media.pngs", "ObjectCreated:Put", "images/e.png"),
        expect("media.pngs", "ObjectCreated:Put", "images/batch/f.png"),
        expect("media.pngs", "ObjectRemoved:Delete", "images/a.png"),
        expect("media.all", "ObjectCreated:Put", "images/a.png"),
        expect("media.all", "ObjectCreated:Put", "images/b.jpg"),
        expect("media.all", "ObjectCreated:Put", "docs/c.png"),
        expect("media.all", "ObjectCreated:Put", "images/d.png"),
        expect("media.all", "ObjectCreated:Put", "images/e.png"),
        expect("media.all", "ObjectCreated:Put", "images/batch/f.png"),
    ]
    .into_iter()
    .collect();
    assert_eq!(fired, expected);
    assert_eq!(records(&js).await.len(), 11, "each change fired once per trigger");
}

#[test]
fn a_function_sees_only_its_granted_buckets() {
    let project = Project::new();
    project.function("probe", "flaky", "buckets = [\"uploads:ro\", \"reports:rw\"]\n");
    let uploads = bucket(&project, "uploads");
    let secret = bucket(&project, "secret");
    std::fs::write(uploads.join("in.txt"), "dropped").unwrap();
    std::fs::write(secret.join("s.txt"), "not granted").unwrap();
    std::os::unix::fs::symlink("../secret/s.txt", uploads.join("relative-link")).unwrap();
    std::os::unix::fs::symlink(secret.join("s.txt"), uploads.join("absolute-link")).unwrap();

    let probe = |event: serde_json::Value| -> serde_json::Value {
        let out = project.sluice_with_stdin(&["invoke", "probe", "--event", "-"], event.to_string().as_bytes());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let read = |path: &str| probe(serde_json::json!({ "read_file": path }));

    assert_eq!(read("/buckets/uploads/in.txt")["result"], "dropped");
    let written = probe(serde_json::json!({ "write_file": "/buckets/reports/out.txt", "content": "summary" }));
    assert_eq!(written["ok"], true, "{written}");
    assert_eq!(std::fs::read_to_string(project.path().join("buckets/reports/out.txt")).unwrap(), "summary");

    for path in [
        "/buckets/secret/s.txt",
        "/buckets/uploads/../secret/s.txt",
        "/buckets/uploads/relative-link",
        "/buckets/uploads/absolute-link",
        "/etc/passwd",
        "/proc/self/environ",
    ] {
        let answer = read(path);
        assert_eq!(answer["ok"], false, "{path} must not be readable: {answer}");
    }
    let denied = probe(serde_json::json!({ "write_file": "/buckets/uploads/new.txt", "content": "x" }));
    assert_eq!(denied["ok"], false, "a read-only bucket refused the write: {denied}");
    assert!(!uploads.join("new.txt").exists());
    let listing = probe(serde_json::json!({ "list_dir": "/" }));
    assert_eq!(listing["ok"], false, "the host's root is not visible: {listing}");
}
