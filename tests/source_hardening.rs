//! The YAML directory source under hostile or broken input, with the real
//! edgecore-dmi binary: a file that cannot be read keeps its devices, FIFOs
//! and device files never freeze the source, a deeply nested file does not
//! delay another file's edit, and an idle directory is not scanned over and
//! over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{Node, bin, wait_for};

/// A device of the thermostat example's model, named `name`.
fn canary(name: &str) -> String {
    format!(
        "apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: {name}
spec:
  deviceModelRef:
    name: thermostat-model
  protocol:
    protocolName: virtual
  properties:
    - name: temperature
      collectCycle: 1000
"
    )
}

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

/// A node with the thermostat example and the virtual mapper, settled.
fn thermostat_node() -> Node {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    node.start_edgecore();
    node.start_virtual_mapper();
    wait_for("thermostat-1 online", 30, || {
        (node.device("default/thermostat-1")?.state.as_deref() == Some("online")).then_some(())
    });
    node
}

fn source_errors(node: &Node) -> Vec<String> {
    node.status().map(|s| s.source_errors).unwrap_or_default()
}

/// Waits until a source error contains every one of `parts`.
fn wait_for_error(node: &Node, secs: u64, parts: &[&str]) -> String {
    wait_for(&format!("a source error with {parts:?}"), secs, || {
        source_errors(node)
            .into_iter()
            .find(|e| parts.iter().all(|p| e.contains(p)))
    })
}

#[test]
fn a_file_that_cannot_be_read_keeps_its_devices() {
    let node = thermostat_node();
    let file = node.path("devices/thermostat.yaml");
    let good = std::fs::read_to_string(&file).unwrap();

    // The file replaced (atomically) by a FIFO: it cannot be read, so its
    // device and model stay and the problem is shown.
    mkfifo(&node.path("devices/swap"));
    std::fs::rename(node.path("devices/swap"), &file).unwrap();
    wait_for_error(
        &node,
        10,
        &["thermostat.yaml: not a regular file but a FIFO"],
    );
    // And by a directory.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    wait_for_error(&node, 10, &["thermostat.yaml: is now a directory"]);
    let s = node.status().unwrap();
    assert!(
        s.devices.iter().any(|d| d.name == "thermostat-1"),
        "{:?}",
        s.devices
    );
    // The mapper still has it: the twins stay fresh.
    wait_for("a fresh temperature", 10, || {
        let d = node.device("default/thermostat-1")?;
        let p = d.properties.iter().find(|p| p.name == "temperature")?;
        (p.age_ms? < 3000).then_some(())
    });

    // Readable again: the error goes, nothing was ever removed.
    std::fs::remove_dir(&file).unwrap();
    std::fs::write(&file, good).unwrap();
    wait_for("the source errors to clear", 10, || {
        source_errors(&node).is_empty().then_some(())
    });
    let logs = node.logs();
    assert!(!logs.contains("device removed"), "{logs}");
    assert!(!logs.contains("model removed"), "{logs}");
}

#[test]
fn fifos_and_devices_do_not_freeze_other_edits() {
    let node = thermostat_node();
    mkfifo(&node.path("devices/pipe.yaml"));
    std::os::unix::fs::symlink(
        node.path("devices/pipe.yaml"),
        node.path("devices/link.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", node.path("devices/zero.yaml")).unwrap();
    std::fs::write(node.path("devices/canary.yaml"), canary("canary")).unwrap();
    wait_for("the canary device", 5, || node.device("default/canary"));
    let errors = source_errors(&node);
    for (file, what) in [
        ("link.yaml", "FIFO"),
        ("pipe.yaml", "FIFO"),
        ("zero.yaml", "character device"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("{file}: not a regular file but a {what}"))),
            "{errors:?}"
        );
    }
    // Removing them clears their errors; the source goes on applying edits.
    for f in ["pipe.yaml", "link.yaml", "zero.yaml"] {
        std::fs::remove_file(node.path(&format!("devices/{f}"))).unwrap();
    }
    std::fs::write(node.path("devices/canary2.yaml"), canary("canary2")).unwrap();
    wait_for("the second canary device", 5, || {
        node.device("default/canary2")
    });
    wait_for("the source errors to clear", 5, || {
        source_errors(&node).is_empty().then_some(())
    });
}

#[test]
fn a_deeply_nested_file_does_not_delay_another_files_edit() {
    let node = thermostat_node();
    std::fs::write(node.path("devices/deep.yaml"), "[".repeat(100_000)).unwrap();
    let started = Instant::now();
    std::fs::write(node.path("devices/canary.yaml"), canary("canary")).unwrap();
    wait_for("the canary device", 5, || node.device("default/canary"));
    let e = wait_for_error(&node, 5, &["deep.yaml:1:", "nesting deeper than 64 levels"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{e} after {:?}",
        started.elapsed()
    );
    // A file over the size limit is refused without being read.
    std::fs::write(
        node.path("devices/huge.yaml"),
        "#".repeat(edgecore_dmi::source::MAX_FILE_BYTES + 1),
    )
    .unwrap();
    wait_for_error(&node, 5, &["huge.yaml: the file is 4194305 bytes"]);
    assert!(node.device("default/thermostat-1").is_some());
}

/// Scans logged so far (`scanned the devices directory`, at debug level).
fn scans(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("scanned the devices directory"))
        .map(str::to_owned)
        .collect()
}

/// Bytes edgecore-dmi has read from files and sockets (`rchar`).
fn rchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn an_idle_directory_is_not_scanned_again_and_again() {
    let mut node = Node::new(&["examples/devices/thermostat.yaml"]);
    // A big comment-only file (within the size limit), e.g. an inventory.
    std::fs::write(
        node.path("devices/inventory.yaml"),
        format!("# {}\n", "x".repeat(97)).repeat(30_000),
    )
    .unwrap();
    // Started here rather than with `Node::start_edgecore`, which sets the
    // log filter: the scans are logged at debug level.
    let log = node.path("edgecore.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin("edgecore-dmi"))
        .arg("--dmi-socket")
        .arg(node.dmi_sock())
        .arg("serve")
        .arg("--state-dir")
        .arg(node.path("state"))
        .arg("--devices-dir")
        .arg(node.path("devices"))
        .env("RUST_LOG", "info,edgecore_dmi::source=debug")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id();
    node.edgecore = Some(child);
    wait_for("edgecore-dmi to answer", 20, || node.status());
    node.start_virtual_mapper();
    wait_for("thermostat-1 online", 30, || {
        (node.device("default/thermostat-1")?.state.as_deref() == Some("online")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));

    let (before, read_before) = (scans(&log).len(), rchar(pid));
    std::thread::sleep(Duration::from_secs(6));
    let idle = scans(&log);
    let read = rchar(pid) - read_before;
    // At most the periodic rescan (every 10 s), which reads nothing new.
    assert!(idle.len() - before <= 1, "{:#?}", &idle[before..]);
    assert!(read < 2_000_000, "read {read} bytes while idle");

    // One edit: one scan (debounced).
    std::fs::write(node.path("devices/canary.yaml"), canary("canary")).unwrap();
    wait_for("the canary device", 5, || node.device("default/canary"));
    std::thread::sleep(Duration::from_secs(1));
    let after = scans(&log);
    assert!(
        (1..=2).contains(&(after.len() - idle.len())),
        "{:#?}",
        &after[idle.len()..]
    );
    // Another: only the changed file is read (the others are long unchanged).
    std::fs::write(node.path("devices/canary.yaml"), canary("canary-b")).unwrap();
    wait_for("the renamed canary device", 5, || {
        node.device("default/canary-b")
    });
    std::thread::sleep(Duration::from_secs(1));
    let last = scans(&log);
    let new = &last[after.len()..];
    assert!(
        (1..=2).contains(&new.len()) && new[0].contains("read=1 "),
        "{new:#?}"
    );
}
