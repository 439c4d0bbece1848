//! First contact by password (`continuum inventory add --password-stdin`): fresh
//! Raspberry Pi and Jetson images ship with a password login and no SSH key. With the
//! ssh2 crate (libssh2; the OpenSSH backend of `ssh/` does keys only) continuum
//! connects ONCE, records the host key it was shown, installs the inventory's public
//! key in the user's `~/.ssh/authorized_keys`, and proves the key works with a second,
//! key-only login that must present the same host key. The host key is then pinned
//! in the inventory (`host_key:`), which every later connection verifies.
//!
//! Invariant: the password lives only in memory for this call; it never reaches argv,
//! the environment, a log, an error message, the inventory or state.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum FirstContactError {
    #[error(
        "cannot read the public key {path} (first contact installs it; make one with ssh-keygen)"
    )]
    PublicKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)")]
    BadPublicKey { path: PathBuf },
    #[error("cannot connect to {address}:{port}: {detail}")]
    Connect {
        address: String,
        port: u16,
        detail: String,
    },
    #[error("SSH with {address}:{port} failed during {step}: {detail}")]
    Ssh {
        address: String,
        port: u16,
        step: &'static str,
        detail: String,
    },
    #[error("{address}:{port} refused the password for user `{user}`")]
    PasswordRejected {
        address: String,
        port: u16,
        user: String,
    },
    #[error("installing the key on {address}:{port} failed (exit {code}): {detail}")]
    Install {
        address: String,
        port: u16,
        code: i32,
        detail: String,
    },
    #[error(
        "the host key of {address}:{port} changed between the password login and the key check \
         ({first} then {second}): refusing to pin either"
    )]
    HostKeyChanged {
        address: String,
        port: u16,
        first: String,
        second: String,
    },
    #[error("the installed key {key} does not log in to {address}:{port} as `{user}`: {detail}")]
    KeyCheck {
        address: String,
        port: u16,
        user: String,
        key: PathBuf,
        detail: String,
    },
}

/// Where and as whom to make first contact.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key; its `.pub` is installed.
    pub key: PathBuf,
    pub timeout: Duration,
}

/// What first contact established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contacted {
    /// `TYPE BASE64`, as in known_hosts (pinned in the inventory).
    pub host_key: String,
    /// `SHA256:...`, as OpenSSH prints it (for the user to compare).
    pub fingerprint: String,
    /// Whether authorized_keys changed (false: the key was already there).
    pub installed: bool,
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn read_public_key(key: &Path) -> Result<String, FirstContactError> {
    let path = pub_path(key);
    let text = std::fs::read_to_string(&path).map_err(|source| FirstContactError::PublicKey {
        path: path.clone(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    let mut parts = line.split_whitespace();
    let ok = matches!(
        (parts.next(), parts.next()),
        (Some(t), Some(b)) if (t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-"))
            && base64::engine::general_purpose::STANDARD.decode(b).is_ok()
    );
    if !ok {
        return Err(FirstContactError::BadPublicKey { path });
    }
    Ok(line)
}

/// A host key blob as known_hosts writes it (`TYPE BASE64`) and its OpenSSH fingerprint
/// (`SHA256:...`), both by the ssh-key crate.
pub fn describe_host_key(blob: &[u8]) -> Result<(String, String), ssh_key::Error> {
    let key = ssh_key::PublicKey::from_bytes(blob)?;
    let fp = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let line = ssh_key::PublicKey::new(key.key_data().clone(), "").to_openssh()?;
    Ok((line.trim().to_string(), fp))
}

/// A handshaken session and the host key it presented.
fn open(t: &Target) -> Result<(ssh2::Session, String, String), FirstContactError> {
    let conn_err = |detail: String| FirstContactError::Connect {
        address: t.address.clone(),
        port: t.port,
        detail,
    };
    let addr = (t.address.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| conn_err(e.to_string()))?
        .next()
        .ok_or_else(|| conn_err("the name resolves to no address".into()))?;
    let tcp = TcpStream::connect_timeout(&addr, t.timeout).map_err(|e| conn_err(e.to_string()))?;
    let ssh_err = |step, e: ssh2::Error| FirstContactError::Ssh {
        address: t.address.clone(),
        port: t.port,
        step,
        detail: e.message().to_string(),
    };
    let mut sess = ssh2::Session::new().map_err(|e| ssh_err("setup", e))?;
    sess.set_timeout(u32::try_from(t.timeout.as_millis()).unwrap_or(u32::MAX));
    sess.set_tcp_stream(tcp);
    sess.handshake().map_err(|e| ssh_err("the handshake", e))?;
    let (line, fp) = {
        let (blob, _) = sess.host_key().ok_or_else(|| FirstContactError::Ssh {
            address: t.address.clone(),
            port: t.port,
            step: "the handshake",
            detail: "the server presented no host key".into(),
        })?;
        describe_host_key(blob).map_err(|e| FirstContactError::Ssh {
            address: t.address.clone(),
            port: t.port,
            step: "the handshake",
            detail: format!("the server's host key does not parse: {e}"),
        })?
    };
    Ok((sess, line, fp))
}

/// Appends the key (read from stdin) to authorized_keys unless it is there; prints
/// `installed` when it changed the file.
const INSTALL_SCRIPT: &str = "umask 077; k=$(cat); mkdir -p \"$HOME/.ssh\" && touch \"$HOME/.ssh/authorized_keys\" && \
     if grep -qxF \"$k\" \"$HOME/.ssh/authorized_keys\"; then echo present; \
     else printf '%s\\n' \"$k\" >> \"$HOME/.ssh/authorized_keys\" && echo installed; fi";

/// Log in once with `password`, install the public key, verify it with a key-only login.
pub fn first_contact(t: &Target, password: &str) -> Result<Contacted, FirstContactError> {
    let pubkey = read_public_key(&t.key)?;
    let (sess, host_key, fp) = open(t)?;
    if sess.userauth_password(&t.user, password).is_err() || !sess.authenticated() {
        return Err(FirstContactError::PasswordRejected {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
        });
    }
    let ssh_err = |step, e: ssh2::Error| FirstContactError::Ssh {
        address: t.address.clone(),
        port: t.port,
        step,
        detail: e.message().to_string(),
    };
    let mut ch = sess
        .channel_session()
        .map_err(|e| ssh_err("opening a channel", e))?;
    ch.exec(INSTALL_SCRIPT)
        .map_err(|e| ssh_err("starting the key install", e))?;
    ch.write_all(format!("{pubkey}\n").as_bytes())
        .map_err(|e| FirstContactError::Ssh {
            address: t.address.clone(),
            port: t.port,
            step: "sending the key",
            detail: e.to_string(),
        })?;
    ch.send_eof().map_err(|e| ssh_err("sending the key", e))?;
    let mut out = String::new();
    let _ = ch.read_to_string(&mut out);
    let mut err = String::new();
    let _ = ch.stderr().read_to_string(&mut err);
    ch.wait_close()
        .map_err(|e| ssh_err("installing the key", e))?;
    let code = ch.exit_status().unwrap_or(-1);
    if code != 0 {
        return Err(FirstContactError::Install {
            address: t.address.clone(),
            port: t.port,
            code,
            detail: err.trim().to_string(),
        });
    }
    let installed = out.trim() == "installed";
    let _ = sess.disconnect(None, "first contact done", None);

    // Key-only login: same host key, and the key we installed must work.
    let (check, second, _) = open(t)?;
    if second != host_key {
        return Err(FirstContactError::HostKeyChanged {
            address: t.address.clone(),
            port: t.port,
            first: fp,
            second: second.split_whitespace().next().unwrap_or("").to_string(),
        });
    }
    check
        .userauth_pubkey_file(&t.user, Some(&pub_path(&t.key)), &t.key, None)
        .map_err(|e| FirstContactError::KeyCheck {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
            key: t.key.clone(),
            detail: e.message().to_string(),
        })?;
    if !check.authenticated() {
        return Err(FirstContactError::KeyCheck {
            address: t.address.clone(),
            port: t.port,
            user: t.user.clone(),
            key: t.key.clone(),
            detail: "the server did not accept the key".into(),
        });
    }
    let _ = check.disconnect(None, "key verified", None);
    Ok(Contacted {
        host_key,
        fingerprint: fp,
        installed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_openssh_format() {
        // ssh-keygen -lf of this blob's key prints this fingerprint.
        let blob = base64::engine::general_purpose::STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
            .expect("b64");
        // `ssh-keygen -lf` prints exactly this for the key (checked by hand, kept as a
        // fact), and the known_hosts form is the key's own text.
        let (line, fp) = describe_host_key(&blob).expect("key blob");
        assert_eq!(fp, "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU");
        assert_eq!(
            line,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        );
        assert!(describe_host_key(b"not a key").is_err());
    }

    #[test]
    fn public_key_file_is_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join("id");
        assert!(matches!(
            read_public_key(&key),
            Err(FirstContactError::PublicKey { .. })
        ));
        std::fs::write(dir.path().join("id.pub"), "not a key\n").expect("write");
        assert!(matches!(
            read_public_key(&key),
            Err(FirstContactError::BadPublicKey { .. })
        ));
        std::fs::write(
            dir.path().join("id.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@x\n",
        )
        .expect("write");
        assert!(
            read_public_key(&key)
                .expect("key")
                .starts_with("ssh-ed25519 AAAA")
        );
    }
}
