//! Test support shared by unit and integration tests: a small file system that fills up, for
//! full-disk tests. Not part of the product; kept out of the documentation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A tmpfs of a fixed size mounted on a temporary directory (root only), unmounted and removed
/// on drop.
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts a file system of `bytes` bytes, or `None` (and says why on stderr) when this
    /// process may not mount one: the caller skips its test, visibly.
    pub fn mount(bytes: u64) -> Option<SmallDisk> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hearsay-disk-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { dir }),
            other => {
                let _ = std::fs::remove_dir(&dir);
                eprintln!(
                    "SKIPPED: a full-disk test needs root to mount a small tmpfs ({other:?})"
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills the file system with a file until writes fail, then frees `leave` bytes of it;
    /// returns the file, whose removal frees the space again.
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        while let Ok(n) = file.write(&chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        let _ = file.set_len(written.saturating_sub(leave));
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
