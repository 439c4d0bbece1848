//! Diagnostics with source positions: every recipe or inventory problem is reported as
//! `file:line:col: message` plus an optional hint, and all problems of one load are
//! reported together (a user fixes a file once, not once per error).

use std::fmt;
use std::path::{Path, PathBuf};

use super::Files;

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

impl Pos {
    pub(crate) fn of(loc: &serde_saphyr::Location) -> Self {
        Pos {
            line: loc.line(),
            col: loc.column(),
        }
    }
}

/// Where a diagnostic about a parsed value points: the value itself.
pub(crate) fn pos<T>(s: &serde_saphyr::Spanned<T>) -> Pos {
    Pos::of(&s.referenced)
}

/// How serious a diagnostic is: errors stop the load, warnings are printed and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a recipe or inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {kind}: {}",
            self.file.display(),
            self.pos.line,
            self.pos.col,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file.
pub struct Sink<'a> {
    file: &'a Path,
    /// What the checks may read of the machine they run on.
    pub(crate) files: &'a dyn Files,
    pub(crate) items: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub fn new(file: &'a Path, files: &'a dyn Files) -> Self {
        Sink {
            file,
            files,
            items: Vec::new(),
        }
    }

    /// The home directory `~/` expands to.
    pub fn home(&self) -> Option<PathBuf> {
        self.files.home()
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Error, pos, message)
    }

    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.push(Severity::Warning, pos, message)
    }

    fn push(
        &mut self,
        severity: Severity,
        pos: Pos,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.items.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            pos,
            message: message.into(),
            help: None,
        });
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}

impl Diagnostic {
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }
}

/// The closest candidate to `word` by edit distance, when it is close enough to be a
/// plausible typo ("did you mean ...").
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("servres", ["servers", "agents"]),
            Some("servers")
        );
        assert_eq!(did_you_mean("zzz", ["servers", "agents"]), None);
    }
}
