//! Helpers shared by this crate's unit tests.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` (the independent oracle) in `dir`; returns success and stdout+stderr.
pub(crate) fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
