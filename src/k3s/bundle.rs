//! The local install bundle (`install: bundle`): the file names k3s releases give the
//! binary and the air-gap images per architecture (docs/k3s.md, "Air-gap images"), and
//! reading what a node needs from it before anything on the node changes.

use std::path::{Path, PathBuf};

use super::K3sError;
use crate::recipe::Images;

/// Air-gap image tarball names of an architecture, in order of preference (as k3s
/// releases name them; docs/k3s.md, "Air-gap images").
pub fn images_names(arch: &str) -> [String; 3] {
    let a = match arch {
        "arm" => "arm",
        "arm64" => "arm64",
        _ => "amd64",
    };
    [".tar.zst", ".tar.gz", ".tar"].map(|ext| format!("k3s-airgap-images-{a}{ext}"))
}

/// The bundle's air-gap image tarball for `arch`, if it has one.
pub fn images_file(dir: &Path, arch: &str) -> Option<PathBuf> {
    images_names(arch)
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Bundle file name of the k3s binary for an architecture (as k3s releases name them).
pub fn bundle_binary(arch: &str) -> &'static str {
    match arch {
        "arm64" => "k3s-arm64",
        "arm" => "k3s-armhf",
        _ => "k3s",
    }
}

/// What a node gets from the bundle: the k3s binary, install.sh, and the air-gap image
/// tarball (file name, bytes) when the recipe takes the images from the bundle.
pub(super) struct Bundle {
    pub binary: Vec<u8>,
    pub script: Vec<u8>,
    pub images: Option<(String, Vec<u8>)>,
}

/// Read what a node of `arch` needs from the bundle at `dir`; a missing file is an
/// error naming `host`, the architecture and what was expected.
pub(super) fn read(host: &str, dir: &Path, images: Images, arch: &str) -> Result<Bundle, K3sError> {
    let file = bundle_binary(arch);
    let bin_path = dir.join(file);
    if !bin_path.is_file() {
        return Err(K3sError::MissingBinary {
            host: host.to_string(),
            arch: arch.to_string(),
            dir: dir.to_path_buf(),
            file: file.to_string(),
        });
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| K3sError::Local {
            path: p.to_path_buf(),
            source,
        })
    };
    let binary = read(&bin_path)?;
    let script = read(&dir.join("install.sh"))?;
    let images = match images {
        Images::Registry => None,
        Images::Bundle => {
            let p = images_file(dir, arch).ok_or_else(|| K3sError::MissingImages {
                host: host.to_string(),
                arch: arch.to_string(),
                dir: dir.to_path_buf(),
                expected: images_names(arch).join(" or "),
            })?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((name, read(&p)?))
        }
    };
    Ok(Bundle {
        binary,
        script,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_its_architecture_s_files_or_an_error_naming_what_is_missing() {
        let dir = tempfile::tempdir().expect("bundle");
        for (f, body) in [
            ("k3s-arm64", "arm64 binary"),
            ("install.sh", "#!/bin/sh\n"),
            ("k3s-airgap-images-arm64.tar.gz", "gz images"),
        ] {
            std::fs::write(dir.path().join(f), body).expect("bundle file");
        }
        let b = read("pi-1", dir.path(), Images::Bundle, "arm64").expect("read");
        assert_eq!(b.binary, b"arm64 binary");
        assert_eq!(b.script, b"#!/bin/sh\n");
        let (name, data) = b.images.expect("images");
        assert_eq!(
            (name.as_str(), &data[..]),
            ("k3s-airgap-images-arm64.tar.gz", &b"gz images"[..])
        );
        let b = read("pi-1", dir.path(), Images::Registry, "arm64").expect("read");
        assert!(b.images.is_none());
        match read("x-1", dir.path(), Images::Bundle, "amd64") {
            Err(K3sError::MissingBinary { host, file, .. }) => {
                assert_eq!((host.as_str(), file.as_str()), ("x-1", "k3s"))
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        std::fs::write(dir.path().join("k3s-armhf"), "arm binary").expect("bundle file");
        match read("pi-0", dir.path(), Images::Bundle, "arm") {
            Err(K3sError::MissingImages { expected, .. }) => assert_eq!(
                expected,
                "k3s-airgap-images-arm.tar.zst or k3s-airgap-images-arm.tar.gz or k3s-airgap-images-arm.tar"
            ),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
