//! The accept loop when the process is out of file descriptors (`EMFILE`): it
//! must pause rather than spin, and accept again once descriptors are free.
//!
//! A tiny `RLIMIT_NOFILE` is set with the shell's `ulimit` in a child process
//! (this test binary again, selected by an environment variable), which then
//! fills its descriptor table itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use dmi_proto::transport::{self, ServerLimits};
use futures::StreamExt;

const CHILD_ENV: &str = "DMI_PROTO_ACCEPT_BACKOFF_CHILD";
const TEST_NAME: &str = "out_of_descriptors_pauses_accepting_instead_of_spinning";

#[test]
fn out_of_descriptors_pauses_accepting_instead_of_spinning() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CPU time of this process so far, in clock ticks (1/100 s on Linux), read
/// from `/proc/self/stat` opened beforehand (no descriptor is free later).
fn cpu_ticks(stat_file: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    let mut stat = String::new();
    stat_file.rewind().unwrap();
    stat_file.read_to_string(&mut stat).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); field 3 is fields[0].
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = transport::bind(&path).await.unwrap();
        let mut incoming = listener.incoming_with(ServerLimits::default());
        let mut stat_file = std::fs::File::open("/proc/self/stat").unwrap();

        // Use up every descriptor but one, which the client takes.
        let mut hog = Vec::new();
        let err = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) => break e,
            }
        };
        assert_eq!(err.raw_os_error(), Some(24), "EMFILE: {err}");
        hog.pop();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();

        let accepted = tokio::spawn(async move { incoming.next().await.map(|r| r.is_ok()) });
        let before = cpu_ticks(&mut stat_file);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_ticks(&mut stat_file) - before;
        assert!(!accepted.is_finished(), "no descriptor to accept with");
        // A spinning accept loop uses the whole 2 s (200 ticks).
        assert!(
            used < 30,
            "{used} CPU ticks in 2 s while out of descriptors"
        );

        // Free some descriptors: the connection waiting in the backlog is
        // accepted within the longest pause (1 s).
        hog.truncate(hog.len().saturating_sub(8));
        let got = tokio::time::timeout(Duration::from_millis(2500), accepted)
            .await
            .expect("accepted once descriptors are free")
            .unwrap();
        assert_eq!(got, Some(true));
    });
}
