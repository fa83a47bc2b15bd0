//! `sluice` run on a pseudo-terminal: what a person at a terminal sees (progress bars,
//! confirmation prompts), which the tests' pipes never show.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Project;

/// What a run on a terminal printed (stdout and stderr interleaved, as the terminal got
/// them, escape sequences included) and how it ended.
pub struct TerminalRun {
    pub status: ExitStatus,
    pub screen: String,
}

/// Runs `sluice --dir PROJECT ARGS...` with stdin, stdout and stderr on a 40×120
/// pseudo-terminal; with `answer = Some((prompt, text))` it types `text` once `prompt` is on
/// the screen. Waits up to 60 s for it to exit.
pub fn sluice_on_terminal(project: &Project, args: &[&str], answer: Option<(&str, &str)>) -> TerminalRun {
    let (master, slave) = open_pty();
    let mut child = project
        .command(args)
        .env("TERM", "xterm")
        .env_remove("SLUICE_NATS_URL")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // The parent keeps no copy of the terminal's slave side: once the child exits, reading
    // the master side ends (EIO) instead of blocking.
    let mut writer = File::from(master.try_clone().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut reader = File::from(master);
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buffer) {
            let _ = tx.send(buffer[..n].to_vec());
        }
    });
    let mut screen = Vec::new();
    let mut typed = answer.is_none();
    let started = Instant::now();
    let status = loop {
        while let Ok(chunk) = rx.try_recv() {
            screen.extend_from_slice(&chunk);
        }
        if let (false, Some((prompt, text))) = (typed, answer) {
            if String::from_utf8_lossy(&screen).contains(prompt) {
                writer.write_all(text.as_bytes()).unwrap();
                typed = true;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("`sluice {}` did not exit within 60 s; the terminal showed:\n{}", args.join(" "), String::from_utf8_lossy(&screen));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(writer);
    reader.join().unwrap();
    while let Ok(chunk) = rx.try_recv() {
        screen.extend_from_slice(&chunk);
    }
    TerminalRun { status, screen: String::from_utf8_lossy(&screen).into_owned() }
}

/// A pseudo-terminal of 40 rows by 120 columns: (master, slave).
fn open_pty() -> (OwnedFd, OwnedFd) {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize { ws_row: 40, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two new descriptors into `master` and `slave`; the name and
    // termios pointers may be null, and `size` outlives the call.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // Other tests of this process spawn children too: none of them may inherit the
        // terminal, or its master side would never see the end of the output.
        // SAFETY: fcntl on a descriptor this function just opened.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }, 0);
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}
