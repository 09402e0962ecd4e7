//! How the directory source touches the file system, all of it blocking (run
//! it on `spawn_blocking`): listing the tree, looking at a file without opening
//! it, and reading it without ever blocking or reading past a size cap.
//!
//! Reading is what an attacker with write access to the directory controls, so
//! only regular files are read: the type and size are checked on the target
//! (symlinks followed) before opening, the file is opened with `O_NONBLOCK` (a
//! FIFO swapped in meanwhile cannot block the open), checked again with
//! `fstat`, and read up to the cap plus one byte.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long after its last change a file's metadata is trusted to show the
/// next change: an edit within the same timestamp tick as a read, with the
/// same size, would otherwise go unnoticed (git's "racy clean" problem).
/// Coarse file systems tick once per second or two.
const RACY: Duration = Duration::from_secs(3);

/// A directory's entries (path and type, symlinks not followed), and the error
/// that broke the listing off before its end, if one did.
pub(crate) type Listed = (Vec<(PathBuf, io::Result<FileType>)>, Option<io::Error>);

/// The file system operations of the source; a seam for tests that simulate
/// failures (running out of descriptors, I/O errors).
pub(crate) trait Fs: Send + Sync + std::fmt::Debug + 'static {
    /// The entries of `dir`: path and type (symlinks not followed), and an
    /// error if the listing broke off before its end.
    fn list(&self, dir: &Path) -> io::Result<Listed>;
    /// Metadata of `path`, symlinks followed.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;
    /// Opens `path` for reading without blocking (`O_NONBLOCK`).
    fn open(&self, path: &Path) -> io::Result<File>;
    /// The current time, to compare with file times.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealFs;

impl Fs for RealFs {
    fn list(&self, dir: &Path) -> io::Result<Listed> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            match entry {
                Ok(e) => out.push((e.path(), e.file_type())),
                Err(e) => return Ok((out, Some(e))),
            }
        }
        Ok((out, None))
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::metadata(path)
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
    }
}

/// Identifies one version of a file's content without reading it: the same
/// stamp means the same content (see [`RACY`] for when that holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of a file with metadata `m`.
    pub(crate) fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether a read that started at `read_at` saw the final content of this
    /// stamp: the file last changed at least [`RACY`] earlier.
    pub(crate) fn settled_before(&self, read_at: SystemTime) -> bool {
        let at = |(s, ns): (i64, i64)| {
            u64::try_from(s)
                .ok()
                .zip(u32::try_from(ns).ok())
                .and_then(|(s, ns)| SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, ns)))
        };
        let newest = at(self.mtime).max(at(self.ctime));
        newest
            .and_then(|t| t.checked_add(RACY))
            .is_some_and(|t| t < read_at)
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The path is not a regular file (after following symlinks).
    #[error("not a regular file but a {0}; only regular files are read")]
    NotRegular(&'static str),
    /// The file is larger than the cap.
    #[error("the file is {len} bytes; the limit is {cap} bytes")]
    TooLarge {
        /// Its size, or the cap plus one when it grew while being read.
        len: u64,
        /// The cap.
        cap: usize,
    },
    /// Looking at the file failed.
    #[error("cannot look at the file: {0}")]
    Stat(#[source] io::Error),
    /// Opening it failed.
    #[error("cannot open the file: {0}")]
    Open(#[source] io::Error),
    /// Reading it failed.
    #[error("cannot read the file: {0}")]
    Read(#[source] io::Error),
}

/// What a path names: a regular file of at most `cap` bytes (its stamp), or
/// why it will not be read.
pub(crate) fn probe(fs: &dyn Fs, path: &Path, cap: usize) -> Result<Stamp, ReadError> {
    let m = fs.metadata(path).map_err(ReadError::Stat)?;
    check(&m, cap)?;
    Ok(Stamp::of(&m))
}

fn check(m: &Metadata, cap: usize) -> Result<(), ReadError> {
    let t = m.file_type();
    if !t.is_file() {
        return Err(ReadError::NotRegular(kind(t)));
    }
    if m.len() > cap as u64 {
        return Err(ReadError::TooLarge { len: m.len(), cap });
    }
    Ok(())
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Reads the regular file at `path`, at most `cap` bytes, never blocking on a
/// FIFO or device; returns the stamp of what was read and the bytes.
pub(crate) fn read_capped(
    fs: &dyn Fs,
    path: &Path,
    cap: usize,
) -> Result<(Stamp, Vec<u8>), ReadError> {
    // Checked before opening (a FIFO or device is never opened at all) ...
    probe(fs, path, cap)?;
    let file = fs.open(path).map_err(ReadError::Open)?;
    // ... and on what was opened, in case the path was replaced meanwhile.
    let m = file.metadata().map_err(ReadError::Stat)?;
    check(&m, cap)?;
    let stamp = Stamp::of(&m);
    let want = usize::try_from(m.len()).unwrap_or(cap).min(cap);
    let mut buf = Vec::with_capacity(want + 1);
    (&file)
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Read)?;
    if buf.len() > cap {
        return Err(ReadError::TooLarge {
            len: buf.len() as u64,
            cap,
        });
    }
    Ok((stamp, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_symlinks_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "abc").unwrap();
        std::os::unix::fs::symlink(&f, dir.path().join("l.yaml")).unwrap();
        let (stamp, text) = read_capped(&RealFs, &f, 10).unwrap();
        assert_eq!(text, b"abc");
        assert_eq!(probe(&RealFs, &f, 10).unwrap(), stamp);
        let (lstamp, text) = read_capped(&RealFs, &dir.path().join("l.yaml"), 10).unwrap();
        assert_eq!((lstamp, text.as_slice()), (stamp, b"abc".as_slice()));
        // A new version has a new stamp.
        std::fs::write(&f, "abcd").unwrap();
        assert_ne!(probe(&RealFs, &f, 10).unwrap(), stamp);
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        std::os::unix::fs::symlink(&fifo, dir.path().join("to-pipe.yaml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
        std::fs::create_dir(dir.path().join("d.yaml")).unwrap();
        for (name, what) in [
            ("pipe.yaml", "FIFO"),
            ("to-pipe.yaml", "FIFO"),
            ("zero.yaml", "character device"),
            ("d.yaml", "directory"),
        ] {
            let e = read_capped(&RealFs, &dir.path().join(name), 10).unwrap_err();
            assert!(
                matches!(e, ReadError::NotRegular(k) if k == what),
                "{name}: {e}"
            );
        }
        // Even opened directly, a FIFO does not block: O_NONBLOCK.
        let f = RealFs.open(&fifo).unwrap();
        assert!(f.metadata().unwrap().file_type().is_fifo());
    }

    #[test]
    fn the_cap_holds_before_and_while_reading() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.yaml");
        std::fs::write(&f, "x".repeat(11)).unwrap();
        let e = read_capped(&RealFs, &f, 10).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { len: 11, cap: 10 }), "{e}");
        std::fs::write(&f, "x".repeat(10)).unwrap();
        assert_eq!(read_capped(&RealFs, &f, 10).unwrap().1.len(), 10);
        // A file that reports size 0 but has content (as in /proc) is still capped.
        let e = read_capped(&RealFs, Path::new("/proc/self/status"), 10).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { len: 11, cap: 10 }), "{e}");
    }

    #[test]
    fn recently_changed_files_are_not_trusted_yet() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "abc").unwrap();
        let stamp = probe(&RealFs, &f, 10).unwrap();
        let now = SystemTime::now();
        assert!(!stamp.settled_before(now));
        assert!(stamp.settled_before(now + RACY + Duration::from_secs(1)));
    }
}
