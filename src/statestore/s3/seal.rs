//! The secrets of an S3-backed state, sealed with age (X25519 recipients) and kept
//! beside the readable state in the object (`Sealed`); the identity file that opens
//! them (docs/state.md, "Secrets").

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::S3Store;
use crate::files::StateError;
use crate::state::shared::Secrets;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Sealed {
    /// The recipients (`age1...`) it was encrypted to, for `state show`.
    pub(super) recipients: Vec<String>,
    /// The binary age file, base64 (standard alphabet, padded).
    pub(super) age: String,
}

pub(super) fn read_identity(
    path: &Path,
    url: &str,
    env: &str,
) -> Result<age::x25519::Identity, StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the age identity {} can be read by other users; chmod 600 it",
                path.display()
            );
        }
    }
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.parse::<age::x25519::Identity>().ok())
        .ok_or_else(|| StateError::NoKey {
            env: env.to_string(),
            url: url.to_string(),
            need: format!(
                "{} holds no age X25519 identity (a line `AGE-SECRET-KEY-1...`)",
                path.display()
            ),
        })
}

impl S3Store {
    pub(super) fn open_secrets(&self, sealed: &Sealed) -> Result<Secrets, StateError> {
        let id = self.inner.identity.as_ref().ok_or_else(|| StateError::NoKey {
            env: self.inner.env.clone(),
            url: self.object_url(),
            need: format!(
                "its secrets are encrypted to {}; give the matching age identity with --state-identity or CONTINUUM_AGE_IDENTITY",
                sealed.recipients.join(", ")
            ),
        })?;
        let crypto = |op, message: String| StateError::Crypto {
            env: self.inner.env.clone(),
            url: self.object_url(),
            op,
            message,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed.age)
            .map_err(|e| crypto("decode", e.to_string()))?;
        let plain = age::decrypt(id, &bytes).map_err(|e| crypto("decrypt", e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| crypto("read", e.to_string()))
    }

    pub(super) fn seal(&self, secrets: &Secrets) -> Result<Option<Sealed>, StateError> {
        if secrets.is_empty() {
            return Ok(None);
        }
        if self.inner.recipients.is_empty() {
            return Err(StateError::NoKey {
                env: self.inner.env.clone(),
                url: self.object_url(),
                need: "storing its secrets needs an age key: give the team's identity with --state-identity (CONTINUUM_AGE_IDENTITY) or recipients with --state-recipient (CONTINUUM_AGE_RECIPIENTS)".to_string(),
            });
        }
        let crypto = |op, message: String| StateError::Crypto {
            env: self.inner.env.clone(),
            url: self.object_url(),
            op,
            message,
        };
        let plain = serde_json::to_vec(secrets).map_err(|e| crypto("encode", e.to_string()))?;
        let enc = age::Encryptor::with_recipients(
            self.inner
                .recipients
                .iter()
                .map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| crypto("encrypt", e.to_string()))?;
        let mut out = Vec::new();
        let mut w = enc
            .wrap_output(&mut out)
            .map_err(|e| crypto("encrypt", e.to_string()))?;
        std::io::Write::write_all(&mut w, &plain).map_err(|e| crypto("encrypt", e.to_string()))?;
        w.finish().map_err(|e| crypto("encrypt", e.to_string()))?;
        Ok(Some(Sealed {
            recipients: self
                .inner
                .recipients
                .iter()
                .map(ToString::to_string)
                .collect(),
            age: base64::engine::general_purpose::STANDARD.encode(out),
        }))
    }
}
