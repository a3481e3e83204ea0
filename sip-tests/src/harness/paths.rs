//! Where things are: the workspace, its target directory, the scenarios, per-test log directories.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root (the parent of the `sip-tests` crate).
pub fn workspace_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_dir().join(dir)
            }
        }
        None => workspace_dir().join("target"),
    }
}

/// The path of a shipped SIPp scenario, e.g. `scenario("options")` → `<workspace>/scenarios/options.xml`.
pub fn scenario(name: &str) -> PathBuf {
    workspace_dir().join("scenarios").join(format!("{name}.xml"))
}

/// A fresh, empty directory under `<target>/e2e-logs/` for one test's (or one SIPp run's) logs.
pub fn fresh_log_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let dir = target_dir().join("e2e-logs").join(format!("{safe}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create log directory {}: {e}", dir.display());
    }
    dir
}

/// The last `lines` lines of a text file (empty string if it cannot be read).
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}
