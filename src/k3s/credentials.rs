//! What continuum reads back from a server: the secure join tokens (docs/k3s.md,
//! "Tokens") and the admin kubeconfig. Each is a secret: read as root, returned to the
//! caller, never logged.

use super::{AGENT_TOKEN_PATH, K3sError, KUBECONFIG_PATH, SHORT, START_WAIT, TOKEN_PATH};
use super::{run_root, wait_then_cat};
use crate::ssh::Remote;

/// Read the secure join token (`K10...::server:...`) from the first server.
pub async fn read_join_token<R: Remote>(r: &R) -> Result<String, K3sError> {
    read_secure_token(r, TOKEN_PATH, "server").await
}

/// Read the agents' secure token (`K10...::node:...`) from a server that runs with
/// `agent-token` (docs/k3s.md, "Tokens").
pub async fn read_agent_token<R: Remote>(r: &R) -> Result<String, K3sError> {
    read_secure_token(r, AGENT_TOKEN_PATH, "node").await
}

async fn read_secure_token<R: Remote>(r: &R, path: &str, kind: &str) -> Result<String, K3sError> {
    // openrc's start returns once k3s is spawned, before it wrote its tokens (systemd's
    // Type=notify returns after).
    let out = run_root(
        r,
        "reading the join token",
        &wait_then_cat(path),
        None,
        START_WAIT + SHORT,
    )
    .await?;
    let token = out.stdout.trim().to_string();
    if !token.starts_with("K10") || !token.contains(&format!("::{kind}:")) {
        return Err(K3sError::Protocol {
            host: r.name().to_string(),
            detail: format!(
                "{path} is not a secure `{kind}` token (K10<CA hash>::{kind}:<secret>)"
            ),
        });
    }
    Ok(token)
}

/// The admin kubeconfig of a server (read with root rights; it is 0600 there).
pub async fn read_kubeconfig<R: Remote>(r: &R) -> Result<String, K3sError> {
    let out = run_root(
        r,
        "reading the kubeconfig",
        &format!("cat {KUBECONFIG_PATH}"),
        None,
        SHORT,
    )
    .await?;
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::scripted::{Scripted, ok};

    #[tokio::test]
    async fn tokens_are_read_after_k3s_wrote_them_and_must_be_secure_ones() {
        let server = Scripted::new("srv-1")
            .on(TOKEN_PATH, ok("K10abc::server:s3cret\n"))
            .on(AGENT_TOKEN_PATH, ok("K10abc::server:wrong-kind\n"));
        assert_eq!(
            read_join_token(&server).await.expect("token"),
            "K10abc::server:s3cret"
        );
        match read_agent_token(&server).await {
            Err(K3sError::Protocol { host, detail }) => {
                assert_eq!(host, "srv-1");
                assert!(detail.contains("not a secure `node` token"), "{detail}");
                assert!(
                    !detail.contains("wrong-kind"),
                    "the secret leaked: {detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        let calls = server.calls();
        // Waits for the file (openrc's start returns early), as root.
        assert!(calls.iter().all(|c| c.root));
        assert_eq!(calls[0].script, wait_then_cat(TOKEN_PATH));
        let plain = Scripted::new("srv-1").on(TOKEN_PATH, ok("s3cret\n"));
        assert!(read_join_token(&plain).await.is_err());
    }

    #[tokio::test]
    async fn the_kubeconfig_is_read_as_root() {
        let server = Scripted::new("srv-1").on(KUBECONFIG_PATH, ok("apiVersion: v1\n"));
        assert_eq!(
            read_kubeconfig(&server).await.expect("read"),
            "apiVersion: v1\n"
        );
        assert!(server.calls()[0].root);
    }
}
