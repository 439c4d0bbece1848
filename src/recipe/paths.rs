//! Paths a recipe or inventory names: relative to the file that names them, `~/`
//! expanded, `.` and `..` removed lexically. Pure path arithmetic, no file access.

use std::path::{Path, PathBuf};

/// Resolve `p` relative to the directory of `base` (a file), expanding `~/`.
pub fn resolve_path(base: &Path, p: &str, home: Option<&Path>) -> PathBuf {
    let expanded = expand_home(p, home);
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        base.parent().unwrap_or(Path::new(".")).join(expanded)
    };
    normalize(&joined)
}

/// Remove `.` and `name/..` components lexically (no symlink resolution).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Expand a leading `~/` to the home directory.
pub fn expand_home(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}
