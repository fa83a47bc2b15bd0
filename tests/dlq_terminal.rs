//! `sluice dlq` at a terminal: a replay of more than five entries shows a progress bar (and
//! only then, and only on a terminal), and `purge` without `--yes` asks first and removes
//! nothing unless the answer is yes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use chrono::Utc;
use common::cli::*;
use common::pty::sluice_on_terminal;

const BAR: &str = "replaying [";

#[tokio::test(flavor = "multi_thread")]
async fn a_long_replay_shows_its_progress_on_a_terminal_only() {
    let (_nats, url, project, js) = dlq_world().await;
    for i in 0..6 {
        seed_dead_letter(&js, "worker", &format!("evt-{i}"), "boom", Utc::now()).await;
    }

    // Six entries at a terminal: the bar, then the summary.
    let run = sluice_on_terminal(&project, &["--nats", &url, "dlq", "replay", "--all", "--function", "worker"], None);
    assert!(run.status.success(), "{}", run.screen);
    assert!(run.screen.contains("Replayed 6 of 6 entries"), "{}", run.screen);
    assert!(run.screen.contains(BAR), "no progress bar for six entries at a terminal:\n{}", run.screen);

    // Five: no bar, though at a terminal.
    for i in 0..5 {
        seed_dead_letter(&js, "other", &format!("evt-o{i}"), "boom", Utc::now()).await;
    }
    let run = sluice_on_terminal(&project, &["--nats", &url, "dlq", "replay", "--all", "--function", "other"], None);
    assert!(run.status.success(), "{}", run.screen);
    assert!(run.screen.contains("Replayed 5 of 5 entries"), "{}", run.screen);
    assert!(!run.screen.contains(BAR), "a progress bar for five entries:\n{}", run.screen);

    // Six through pipes: no bar in what a script reads.
    for i in 0..6 {
        seed_dead_letter(&js, "piped", &format!("evt-p{i}"), "boom", Utc::now()).await;
    }
    let out = sluice_ok(&project, &url, &["dlq", "replay", "--all", "--function", "piped"]);
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("Replayed 6 of 6 entries"), "{printed}");
    assert!(!printed.contains(BAR), "a progress bar through a pipe:\n{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_at_a_terminal_asks_and_removes_only_on_yes() {
    let (_nats, url, project, js) = dlq_world().await;
    let first = seed_dead_letter(&js, "worker", "evt-1", "boom", Utc::now()).await;
    let second = seed_dead_letter(&js, "worker", "evt-2", "boom", Utc::now()).await;
    let purge = ["--nats", url.as_str(), "dlq", "purge", "--all", "--function", "worker"];
    let prompt = "Remove every DLQ entry of function worker for good? [y/N]";

    for answer in ["n\r", "\r", "whatever\r"] {
        let run = sluice_on_terminal(&project, &purge, Some((prompt, answer)));
        assert!(run.status.success(), "{}", run.screen);
        assert!(run.screen.contains("Nothing removed."), "answer {answer:?}:\n{}", run.screen);
        assert_eq!(remaining_ids(&js).await, [first, second], "answer {answer:?} removed entries");
    }

    let run = sluice_on_terminal(&project, &purge, Some((prompt, "y\r")));
    assert!(run.status.success(), "{}", run.screen);
    assert!(!run.screen.contains("Nothing removed."), "{}", run.screen);
    assert_eq!(remaining_ids(&js).await, Vec::<u64>::new(), "the answer y removed nothing:\n{}", run.screen);
}
