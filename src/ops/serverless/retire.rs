//! Retiring the OSCAR layer's manifest files the recipe no longer wants: hidden from
//! k3s first, then their objects deleted stage by stage with a bounded wait each, and
//! only then the file removed (docs/k3s.md, "Manifests, the deploy controller and
//! helm-controller"); the root commands on the first server that do it.

use super::*;

const SHORT: Duration = Duration::from_secs(60);

pub(super) async fn root<R: Remote>(
    r: &R,
    step: &str,
    script: &str,
    stdin: Option<&[u8]>,
) -> Result<String, LayerError> {
    Ok(crate::k3s::run_root(r, step, script, stdin, SHORT)
        .await?
        .stdout)
}

/// The layer's manifests on the server.
#[derive(Debug, Default)]
pub(super) struct Present {
    /// Applied by k3s: `file -> (sha256, mode)`.
    pub(super) live: BTreeMap<String, (String, String)>,
    /// Being removed (hidden as `.FILE.removing`): the live names they stand for.
    pub(super) retiring: Vec<String>,
}

/// List the layer's live and retiring manifests (one round trip).
pub(super) async fn present<R: Remote>(r: &R) -> Result<Present, LayerError> {
    let script = format!(
        "cd {MANIFESTS_DIR} 2>/dev/null || exit 0\n\
         for f in {FILE_PREFIX}*.yaml; do [ -f \"$f\" ] || continue; echo \"live $f $(sha256sum < \"$f\" | cut -d' ' -f1) $(stat -c %a \"$f\")\"; done\n\
         for f in .{FILE_PREFIX}*.yaml{suffix}; do [ -f \"$f\" ] && echo \"retiring $f\"; done; true",
        suffix = removal::RETIRING_SUFFIX,
    );
    let out = root(r, "listing the serverless manifests", &script, None).await?;
    let mut p = Present::default();
    for l in out.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next(), w.next(), w.next()) {
            (Some("live"), Some(f), Some(sha), Some(mode)) => {
                p.live
                    .insert(f.to_string(), (sha.to_string(), mode.to_string()));
            }
            (Some("retiring"), Some(f), None, None) => {
                if let Some(live) = removal::live_name(f) {
                    p.retiring.push(live.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(p)
}

/// How long one stage of a removal may take: helm-controller runs an uninstall job
/// (its image may have to be pulled) before it lets a HelmChart go.
pub const REMOVAL_TIMEOUT: Duration = Duration::from_secs(600);
pub(super) const REMOVAL_POLL: Duration = Duration::from_secs(2);

/// Remove manifest files with their components, last file first (the reverse of
/// the apply order: OSCAR before what it runs on). `live` are files k3s applies now,
/// `retiring` those an earlier run had started to remove; a file in both lists is
/// finished first and then retired again (its live content may name more objects).
pub(super) async fn retire<R: Remote>(
    r: &R,
    live: &[String],
    retiring: &[String],
    timeout: Duration,
    poll: Duration,
) -> Result<(), LayerError> {
    let mut work: Vec<(&str, bool)> = live
        .iter()
        .map(|f| (f.as_str(), true))
        .chain(retiring.iter().map(|f| (f.as_str(), false)))
        .collect();
    // Descending by name; for one name the retiring copy (false) before the live one.
    work.sort_by(|a, b| b.0.cmp(a.0).then(a.1.cmp(&b.1)));
    for (file, is_live) in work {
        retire_one(r, file, is_live, timeout, poll).await?;
    }
    Ok(())
}

/// Read a manifest's text on the server with root rights (it is 0600). Its content
/// (passwords) never reaches an error message.
async fn read_manifest<R: Remote>(r: &R, path: &str) -> Result<String, LayerError> {
    let out = r
        .run(&format!("cat {}", quote(path)), None, true, SHORT)
        .await
        .map_err(crate::k3s::K3sError::from)?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(crate::k3s::K3sError::Step {
            host: r.name().to_string(),
            step: format!("reading {path}"),
            code: out
                .status
                .map_or_else(|| "signal".to_string(), |c| c.to_string()),
            tail: out.stderr.trim().to_string(),
        }
        .into())
    }
}

async fn retire_one<R: Remote>(
    r: &R,
    file: &str,
    is_live: bool,
    timeout: Duration,
    poll: Duration,
) -> Result<(), LayerError> {
    let retiring = removal::retiring_name(file);
    let hidden = format!("{MANIFESTS_DIR}/{retiring}");
    let path = if is_live {
        format!("{MANIFESTS_DIR}/{file}")
    } else {
        hidden.clone()
    };
    // Parse before hiding: a file continuum cannot read stays where it is.
    let text = read_manifest(r, &path).await?;
    let stages = removal::deletions(file, &text).map_err(|source| RemovalError::Manifest {
        host: r.name().to_string(),
        dir: MANIFESTS_DIR,
        file: if is_live {
            file.to_string()
        } else {
            retiring.clone()
        },
        source,
    })?;
    if is_live {
        // k3s skips dot-files: from here on it neither applies the file again (not
        // even at its next start) nor forgets what it named.
        root(
            r,
            &format!("hiding {file} from k3s"),
            &format!("mv -f {} {}", quote(&path), quote(&hidden)),
            None,
        )
        .await?;
    }
    for stage in &stages {
        delete_stage(r, file, &retiring, stage, timeout, poll).await?;
    }
    root(
        r,
        &format!("removing {retiring}"),
        &format!("rm -f {}", quote(&hidden)),
        None,
    )
    .await?;
    Ok(())
}

/// Delete one stage's objects and wait until all are gone, re-asking each round (a
/// DELETE is idempotent; an API that is restarting answers again later).
async fn delete_stage<R: Remote>(
    r: &R,
    file: &str,
    retiring: &str,
    stage: &[Deletion],
    timeout: Duration,
    poll: Duration,
) -> Result<(), LayerError> {
    let script = removal::round_script(crate::k3s::BIN_PATH, stage);
    let start = std::time::Instant::now();
    loop {
        let out = r
            .run(&script, None, true, SHORT)
            .await
            .map_err(crate::k3s::K3sError::from)?;
        let rounds = removal::parse_round(stage, &out.stdout);
        let left: Vec<(&Deletion, &Round)> = stage
            .iter()
            .zip(&rounds)
            .filter(|(_, s)| **s != Round::Gone)
            .collect();
        let Some((first, state)) = left.first() else {
            return Ok(());
        };
        if start.elapsed() >= timeout {
            let last = match state {
                Round::Present(m) | Round::Unknown(m) if !m.is_empty() => format!(": {m}"),
                _ => String::new(),
            };
            let what = left
                .iter()
                .map(|(d, _)| d.describe())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(RemovalError::Timeout {
                host: r.name().to_string(),
                dir: MANIFESTS_DIR,
                file: file.to_string(),
                retiring: retiring.to_string(),
                what,
                secs: timeout.as_secs(),
                last,
                hint: first.who_finishes(),
            }
            .into());
        }
        tokio::time::sleep(poll).await;
    }
}
