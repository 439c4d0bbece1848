//! Inventory management: `continuum inventory add|remove|list|import|probe`.
//!
//! Invariants: an inventory file is only ever replaced by a version that
//! `files::load_inventory` accepts (written to a temporary file next to it, validated,
//! then renamed), so a failed edit leaves the old file untouched. Edits are line-level
//! (`edit`) to keep comments and order. Probe results are stored per host as a
//! one-line `probed:` mapping that `up` reads (device preparation, per-arch artifacts).

pub mod ansible;
pub mod edit;

use std::path::{Path, PathBuf};

use crate::recipe::{self, LoadError};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host `{0}` is already in the inventory")]
    Exists(String),
    #[error("no host `{0}` in the inventory")]
    NoSuchHost(String),
    #[error("cannot edit the inventory: {0}")]
    Edit(String),
    #[error("{path}: invalid inventory (the file was not changed)")]
    Invalid {
        path: PathBuf,
        #[source]
        source: LoadError,
    },
    #[error("{file}:{line}: {detail}")]
    Ansible {
        file: String,
        line: usize,
        detail: String,
    },
}

pub fn read(path: &Path) -> Result<String, InventoryError> {
    std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Replace `path` with `text` if the result is a valid inventory; keeps the file's mode.
pub fn write_checked(path: &Path, text: &str) -> Result<(), InventoryError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "inventory".into(), |n| n.to_string_lossy().into_owned());
    // Same directory, so relative key paths resolve as they will in the final file.
    let tmp = dir.join(format!(".{name}.continuum-edit"));
    let werr = |source| InventoryError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(werr)?;
    if let Err(source) = crate::files::load_inventory(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(InventoryError::Invalid {
            path: path.to_path_buf(),
            source,
        });
    }
    let _ = std::fs::remove_file(&tmp);
    let mode = std::fs::metadata(path).map_or(0o644, |m| {
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
    });
    crate::files::write_atomic(path, text.as_bytes(), mode).map_err(werr)
}

/// Add a host (the file is created with `hosts:` when missing).
pub fn add(path: &Path, host: &edit::NewHost) -> Result<(), InventoryError> {
    let text = if path.exists() {
        read(path)?
    } else {
        "# continuum inventory (see README.md, \"Recipes and inventories\")\nhosts: []\n".into()
    };
    write_checked(path, &edit::add(&text, host)?)
}

pub fn remove(path: &Path, name: &str) -> Result<(), InventoryError> {
    write_checked(path, &edit::remove(&read(path)?, name)?)
}

/// Import an Ansible inventory into `path`; hosts already there (by name) are kept as
/// they are. Returns (imported, skipped) host names.
pub fn import(src: &Path, path: &Path) -> Result<(Vec<String>, Vec<String>), InventoryError> {
    let hosts = ansible::import(&src.display().to_string(), &read(src)?)?;
    let mut text = if path.exists() {
        read(path)?
    } else {
        format!(
            "# imported from {} by `continuum inventory import`\nhosts: []\n",
            src.display()
        )
    };
    let existing = edit::names(&text)?;
    let (mut added, mut skipped) = (Vec::new(), Vec::new());
    for h in hosts {
        if existing.contains(&h.name) {
            skipped.push(h.name);
            continue;
        }
        text = edit::add(&text, &h)?;
        added.push(h.name);
    }
    write_checked(path, &text)?;
    Ok((added, skipped))
}

/// Store probe results (host name -> facts) in the inventory.
pub fn store_probed(
    path: &Path,
    facts: &[(String, crate::recipe::device::Facts)],
) -> Result<(), InventoryError> {
    let mut text = read(path)?;
    for (name, f) in facts {
        let v = serde_json::to_value(f).map_err(|e| InventoryError::Edit(e.to_string()))?;
        text = edit::set_probed(&text, name, &v)?;
    }
    write_checked(path, &text)
}

/// Connection defaults of an inventory (`defaults:`), for hosts not yet in it:
/// (user, port, key path resolved against the inventory file).
pub fn defaults(path: &Path) -> (Option<String>, Option<u16>, Option<PathBuf>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (None, None, None);
    };
    let Ok(inv) = serde_saphyr::from_str::<recipe::raw::InventoryFile>(&text) else {
        return (None, None, None);
    };
    let Some(d) = inv.defaults else {
        return (None, None, None);
    };
    (
        d.user.map(|u| u.value),
        d.port.map(|p| p.value),
        d.key
            .map(|k| recipe::paths::resolve_path(path, &k.value, dirs::home_dir().as_deref())),
    )
}

/// One row of `inventory list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub role: Option<String>,
    pub bastion: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub arch: Option<String>,
    pub model: Option<String>,
}

pub fn list(path: &Path) -> Result<Vec<Row>, InventoryError> {
    let (hosts, _) =
        crate::files::load_inventory(path).map_err(|source| InventoryError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
    let order = edit::names(&read(path)?)?;
    let roles = recipe::inventory_roles(path, &crate::files::Disk).unwrap_or_default();
    let mut rows: Vec<Row> = hosts
        .into_values()
        .map(|h| Row {
            role: roles.get(&h.name).cloned(),
            arch: h.probed.as_deref().map(|p| p.arch.clone()),
            model: h
                .probed
                .as_deref()
                .map(crate::recipe::device::Facts::model)
                .filter(|m| !m.is_empty()),
            name: h.name,
            address: h.address,
            port: h.port,
            user: h.user,
            bastion: h.bastion,
            labels: h.labels,
        })
        .collect();
    rows.sort_by_key(|r| {
        order
            .iter()
            .position(|n| *n == r.name)
            .unwrap_or(usize::MAX)
    });
    Ok(rows)
}
