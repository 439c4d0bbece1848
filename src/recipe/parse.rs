//! Reading recipe and inventory files and parsing their YAML into the `raw` types,
//! positions kept. A file that cannot be read or parsed is a `LoadError`; a parse error
//! is a diagnostic at the line and column serde reports. Files are read through the
//! `Files` trait only; the checks of what the YAML says live in `super::check`.

use std::path::{Path, PathBuf};

use super::Files;
use super::diag::{Diagnostic, Pos, Severity, Sink};

/// Why a recipe could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

/// Every error, one per line, then their count (warnings are printed by the caller).
fn render(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut out = String::new();
    for d in diags.iter().filter(|d| d.severity == Severity::Error) {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out.push_str(&format!("{errors} error(s) in the recipe or inventory"));
    out
}

/// Read a file through `files`; a failure names the file.
pub(super) fn read(files: &dyn Files, path: &Path) -> Result<String, LoadError> {
    files.read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse YAML text into `T`, turning a serde error into a positioned diagnostic.
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    files: &dyn Files,
    file: &Path,
    text: &str,
) -> Result<T, LoadError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let p = e
            .location()
            .map(|l| Pos::of(&l))
            .unwrap_or(Pos { line: 1, col: 1 });
        let mut sink = Sink::new(file, files);
        let message = e.without_snippet().to_string();
        let message = message
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        // The position is already in the `file:line:col:` prefix; do not repeat it.
        let suffix = format!(" at line {}, column {}", p.line, p.col);
        let message = message
            .strip_suffix(&suffix)
            .map_or(message.clone(), str::to_string);
        let d = sink.error(p, message);
        if d.message.contains("unknown field") {
            d.help("remove the key or check its spelling against the documented schema");
        }
        LoadError::Invalid(sink.items)
    })
}
