//! Bootstrap tokens for enrolment pools, through `k3s token` on a server
//! (docs/enrolment.md, "Bootstrap tokens"): create one with a TTL and a description
//! (the token comes back on stdout, never through a command line or a log), and delete
//! one by id (an already deleted or expired-and-cleaned token is fine).

use std::time::Duration;

use super::{BIN_PATH, K3sError, SHORT, check, run_root};
use crate::ssh::{Remote, quote};
use crate::state::Secret;

/// A bootstrap token `k3s token create` printed: `K10<ca hash>::<id>.<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolToken {
    /// The 6-character id, which `k3s token delete` takes.
    pub id: String,
    /// The whole token (a secret).
    pub token: Secret,
}

/// Parse what `k3s token create` prints: one line `K10<64 hex>::<id>.<secret>`, the id
/// 6 and the secret 16 characters of `[a-z0-9]` (k8s.io/cluster-bootstrap's pattern).
/// The error never repeats the text (it holds the secret).
pub fn parse_created_token(host: &str, stdout: &str) -> Result<PoolToken, K3sError> {
    let bad = |why: &str| K3sError::Protocol {
        host: host.to_string(),
        detail: format!("`k3s token create` printed no bootstrap token ({why})"),
    };
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("K10"))
        .ok_or_else(|| bad("no line starts with K10"))?;
    let (hash, creds) = line[3..]
        .split_once("::")
        .ok_or_else(|| bad("no `::` after the CA hash"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the CA hash is not 64 hex digits"));
    }
    let (id, secret) = creds
        .split_once('.')
        .ok_or_else(|| bad("the credentials are not <id>.<secret>"))?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !ok(id, 6) || !ok(secret, 16) {
        return Err(bad(
            "the credentials are not <6 chars>.<16 chars> of [a-z0-9]",
        ));
    }
    Ok(PoolToken {
        id: id.to_string(),
        token: Secret::new(line),
    })
}

/// The `--ttl` argument for a duration: whole seconds as a Go duration (`0` would mean
/// "never expires", which pools never ask for).
pub fn ttl_arg(ttl: Duration) -> String {
    format!("{}s", ttl.as_secs().max(1))
}

/// `k3s token create --ttl TTL --description DESCRIPTION` on a server, as root.
pub async fn create_token<R: Remote>(
    r: &R,
    ttl: Duration,
    description: &str,
) -> Result<PoolToken, K3sError> {
    let out = run_root(
        r,
        "creating a bootstrap token",
        &format!(
            "{BIN_PATH} token create --ttl {} --description {}",
            ttl_arg(ttl),
            quote(description)
        ),
        None,
        SHORT,
    )
    .await?;
    parse_created_token(r.name(), &out.stdout)
}

/// `k3s token delete ID` on a server, as root. Returns whether a token was deleted;
/// one that is already gone (deleted, or expired and removed by the tokencleaner) is
/// `Ok(false)`.
pub async fn delete_token<R: Remote>(r: &R, id: &str) -> Result<bool, K3sError> {
    let out = r
        .run(
            &format!("{BIN_PATH} token delete {}", quote(id)),
            None,
            true,
            SHORT,
        )
        .await?;
    if out.success() {
        return Ok(true);
    }
    if out.stderr.contains("not found") || out.stdout.contains("not found") {
        return Ok(false);
    }
    check(r.name(), "deleting a bootstrap token", out).map(|_| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::scripted::{Scripted, exit, ok};

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_printed_token_is_parsed_and_a_bad_one_is_refused_without_echo() {
        let t = parse_created_token("s", &format!("K10{HASH}::abc123.0123456789abcdef\n"))
            .expect("token");
        assert_eq!(t.id, "abc123");
        assert_eq!(
            t.token.expose(),
            format!("K10{HASH}::abc123.0123456789abcdef")
        );
        for bad in [
            String::new(),
            format!("K10{HASH}::server:supersecretvalue"),
            format!("K10{}::abc123.0123456789abcdef", &HASH[..10]),
            format!("K10{HASH}::ABC123.0123456789abcdef"),
            format!("K10{HASH}::abc123.short"),
        ] {
            let e = parse_created_token("s", &bad).expect_err(&bad).to_string();
            assert!(
                !e.contains("supersecret") && !e.contains("0123456789abcdef"),
                "{e}"
            );
        }
        assert_eq!(ttl_arg(Duration::from_secs(86400)), "86400s");
        assert_eq!(ttl_arg(Duration::ZERO), "1s");
    }

    #[tokio::test]
    async fn create_reads_stdout_and_delete_accepts_a_gone_token() {
        let r = Scripted::new("srv")
            .on(
                "token create --ttl 3600s --description 'continuum pool field'",
                ok(&format!("K10{HASH}::abc123.0123456789abcdef\n")),
            )
            .on("token delete abc123", ok("bootstrap token \"abc123\" deleted\n"))
            .on(
                "token delete zzz999",
                exit(
                    1,
                    "level=fatal msg=\"failed to delete bootstrap token ...: secrets \\\"bootstrap-token-zzz999\\\" not found\"",
                ),
            )
            .on("token delete bad000", exit(1, "level=fatal msg=\"connection refused\""));
        let t = create_token(&r, Duration::from_secs(3600), "continuum pool field")
            .await
            .expect("create");
        assert_eq!(t.id, "abc123");
        assert!(delete_token(&r, "abc123").await.expect("delete"));
        assert!(!delete_token(&r, "zzz999").await.expect("already gone"));
        assert!(delete_token(&r, "bad000").await.is_err());
    }
}
