//! The serverless steps of `up` and `down` (issue 4): upload the OSCAR layer's
//! manifests to the first server, wait until OSCAR answers through the endpoint users
//! will use, register the endpoint (catalog + oscar-cli), and undo each of these.
//!
//! Removing a manifest removes its component (docs/k3s.md, "Manifests, the deploy
//! controller and helm-controller"): k3s leaves the objects of a deleted file in place,
//! so a file that is no longer wanted is first hidden from k3s (renamed to a dot-file),
//! then its objects are deleted stage by stage (`serverless::removal`), each stage
//! waited for with a bounded timeout, and only then is the file removed.
//!
//! Invariants: manifests are written with root rights, mode 0600 (they hold the OSCAR
//! and MinIO passwords), from stdin (never argv), only when their content differs; the
//! layer's files all start with `continuum-oscar-`, so stale ones are found as a set;
//! a retiring file stays on the server until every object it defines is gone, so a
//! rerun after a crash finishes the removal; manifest text is never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::oscar::ReadyError;
use crate::oscar::client::{ClientError, Oscar, SystemInfo};
use crate::oscar::removal::{self, Deletion, ManifestError, Round};
use crate::recipe::Environment;
use crate::recipe::serverless::Serverless;
use crate::registry::endpoints::{self, Endpoint, EndpointsError};
use crate::registry::oscar_cli::{self, OscarCliError};
use crate::render::oscar::{self as manifests, FILE_PREFIX, MANIFESTS_DIR, RenderError};
use crate::ssh::{Remote, quote};
use crate::state::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    K3s(#[from] crate::k3s::K3sError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
    #[error(transparent)]
    OscarCli(#[from] OscarCliError),
    #[error("no OSCAR credentials in state for environment `{0}`")]
    NoCredentials(String),
    #[error(
        "`{host}` is {arch}: OSCAR's images exist for amd64 and arm64 only (docs/oscar.md, \"Architectures\")"
    )]
    UnsupportedArch { host: String, arch: String },
    #[error(transparent)]
    Removal(Box<RemovalError>),
}

/// Why a manifest and its component could not be removed (boxed: large).
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error(
        "cannot remove {dir}/{file} on `{host}`: {source}; fix or delete the file by hand, then run again"
    )]
    Manifest {
        host: String,
        dir: &'static str,
        file: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "removing {file} on `{host}`: {what} is still there after {secs} s{last}; {hint}. The file stays as {dir}/{retiring} (k3s ignores it) and the next run continues"
    )]
    Timeout {
        host: String,
        dir: &'static str,
        file: String,
        retiring: String,
        what: String,
        secs: u64,
        /// The last message kubectl gave about it, as `: MESSAGE`, or empty.
        last: String,
        hint: String,
    },
}

impl From<RemovalError> for LayerError {
    fn from(e: RemovalError) -> Self {
        LayerError::Removal(Box::new(e))
    }
}

/// Refuse nodes OSCAR has no images for (32-bit ARM), before anything is uploaded.
pub fn check_arch(arches: &BTreeMap<String, String>) -> Result<(), LayerError> {
    match arches
        .iter()
        .find(|(_, a)| a.as_str() != "amd64" && a.as_str() != "arm64")
    {
        Some((host, arch)) => Err(LayerError::UnsupportedArch {
            host: host.clone(),
            arch: arch.clone(),
        }),
        None => Ok(()),
    }
}

const SHORT: Duration = Duration::from_secs(60);

async fn root<R: Remote>(
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
struct Present {
    /// Applied by k3s: `file -> (sha256, mode)`.
    live: BTreeMap<String, (String, String)>,
    /// Being removed (hidden as `.FILE.removing`): the live names they stand for.
    retiring: Vec<String>,
}

/// List the layer's live and retiring manifests (one round trip).
async fn present<R: Remote>(r: &R) -> Result<Present, LayerError> {
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
const REMOVAL_POLL: Duration = Duration::from_secs(2);

/// Remove manifest files with their components, last file first (the reverse of
/// the apply order: OSCAR before what it runs on). `live` are files k3s applies now,
/// `retiring` those an earlier run had started to remove; a file in both lists is
/// finished first and then retired again (its live content may name more objects).
async fn retire<R: Remote>(
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

/// Converge the layer's manifests on the first server. Returns whether anything
/// changed.
pub async fn apply_layer<R: Remote>(
    r: &R,
    env: &Environment,
    s: &Serverless,
    creds: &Credentials,
) -> Result<bool, LayerError> {
    let wanted = manifests::render(&env.name, s, creds)?;
    let have = present(r).await?;
    // Components no longer wanted go first (and a removal an earlier run left
    // half-done is finished), so a replaced one never runs next to its successor.
    let stale: Vec<String> = have
        .live
        .keys()
        .filter(|f| !wanted.iter().any(|m| &m.file == *f))
        .cloned()
        .collect();
    let mut changed = !stale.is_empty() || !have.retiring.is_empty();
    retire(r, &stale, &have.retiring, REMOVAL_TIMEOUT, REMOVAL_POLL).await?;
    for m in &wanted {
        let sha = crate::k3s::sha256_hex(m.text.as_bytes());
        let path = format!("{MANIFESTS_DIR}/{}", m.file);
        // A file whose earlier removal was just finished lost its objects and its
        // Addon record: write it again even when its content is the same.
        let finished = have.retiring.contains(&m.file);
        match have.live.get(&m.file) {
            Some((h, mode)) if *h == sha && !finished => {
                if mode != "600" {
                    root(
                        r,
                        "fixing a manifest's mode",
                        &format!("chmod 0600 {}", quote(&path)),
                        None,
                    )
                    .await?;
                    changed = true;
                }
            }
            _ => {
                let tmp = format!("{MANIFESTS_DIR}/.{}.continuum-tmp", m.file);
                // k3s applies *.yaml only, so the dot-file temp is never half-applied.
                let script = format!(
                    "set -e; umask 077; mkdir -p {MANIFESTS_DIR}; cat > {t}; chmod 0600 {t}; mv -f {t} {p}",
                    t = quote(&tmp),
                    p = quote(&path)
                );
                root(
                    r,
                    &format!("writing {}", m.file),
                    &script,
                    Some(m.text.as_bytes()),
                )
                .await?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Remove every component of the layer from the cluster, then its manifests.
pub async fn remove_layer<R: Remote>(r: &R) -> Result<bool, LayerError> {
    let have = present(r).await?;
    let live: Vec<String> = have.live.keys().cloned().collect();
    let had = !live.is_empty() || !have.retiring.is_empty();
    retire(r, &live, &have.retiring, REMOVAL_TIMEOUT, REMOVAL_POLL).await?;
    Ok(had)
}

/// The OSCAR client for the cluster as users reach it.
pub fn client(s: &Serverless, creds: &Credentials) -> Result<Oscar, LayerError> {
    Ok(Oscar::new(
        &s.cluster_id,
        &s.endpoint,
        &creds.oscar_user,
        creds.oscar_password.clone(),
        s.oscar_cli.ssl_verify,
        Duration::from_secs(10),
    )?)
}

/// Wait for `/health` and `/system/info` through the user-facing endpoint.
pub async fn wait_ready(s: &Serverless, creds: &Credentials) -> Result<SystemInfo, LayerError> {
    let c = client(s, creds)?;
    Ok(crate::oscar::wait_ready(
        &s.cluster_id,
        &c,
        s.readiness_timeout,
        Some(s.oscar.version),
    )
    .await?)
}

/// The architecture of the cluster's nodes (`mixed` when they differ) and whether
/// any node has a GPU label.
pub fn arch_and_gpu(env: &Environment, arches: &BTreeMap<String, String>) -> (String, bool) {
    let mut set: Vec<&String> = arches.values().collect();
    set.sort();
    set.dedup();
    let arch = match set.as_slice() {
        [] => "unknown".to_string(),
        [one] => (*one).clone(),
        _ => "mixed".to_string(),
    };
    let gpu = env.hosts.values().any(|h| {
        h.labels
            .get("nvidia.com/gpu.present")
            .is_some_and(|v| v == "true")
    }) || env
        .cluster
        .node_labels
        .get("nvidia.com/gpu.present")
        .is_some_and(|v| v == "true");
    (arch, gpu)
}

/// The oscar-cli config file for this layer.
pub fn oscar_cli_path(s: &Serverless) -> PathBuf {
    s.oscar_cli
        .path
        .clone()
        .unwrap_or_else(oscar_cli::default_path)
}

/// Record the endpoint in the catalog and the oscar-cli config. Returns whether
/// either changed.
pub fn register(
    state_dir: &Path,
    env: &Environment,
    s: &Serverless,
    creds: &Credentials,
    info: &SystemInfo,
    arch: &str,
    gpu: bool,
) -> Result<bool, LayerError> {
    let cli = oscar_cli_path(s);
    let e = Endpoint {
        name: s.cluster_id.clone(),
        env: env.name.clone(),
        oscar_url: s.endpoint.clone(),
        minio_url: s.minio_url(),
        kube_context: env.kubeconfig.context.clone(),
        tier: s.tier,
        arch: arch.to_string(),
        gpu: s.gpu.unwrap_or(gpu),
        oscar_version: info.version.clone(),
        ssl_verify: s.oscar_cli.ssl_verify,
        oscar_cli_config: cli.clone(),
    };
    // A renamed cluster or moved oscar-cli file: drop the old registration first.
    for old in endpoints::list(state_dir)? {
        if old.env == env.name && (old.name != e.name || old.oscar_cli_config != cli) {
            endpoints::remove(state_dir, &old.name)?;
        }
    }
    let mut changed = endpoints::upsert(state_dir, e)?;
    changed |= oscar_cli::upsert(
        &cli,
        &s.cluster_id,
        &oscar_cli::Entry {
            endpoint: s.endpoint.clone(),
            auth_user: creds.oscar_user.clone(),
            auth_password: creds.oscar_password.clone(),
            ssl_verify: s.oscar_cli.ssl_verify,
        },
        s.oscar_cli.set_default,
    )?;
    Ok(changed)
}

/// Remove every endpoint of the environment (catalog and oscar-cli entries).
pub fn unregister(state_dir: &Path, env: &str) -> Result<Vec<String>, LayerError> {
    Ok(endpoints::remove_env(state_dir, env)?)
}

/// One registered endpoint as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointStatus {
    pub name: String,
    pub oscar_url: String,
    pub tier: crate::recipe::serverless::Tier,
    /// `ok`, the error of `GET /health`, or `None` when offline.
    pub health: Option<String>,
}

/// The environment's registered endpoints; with `live`, each one's `/health`.
pub async fn endpoint_status(state_dir: &Path, env: &str, live: bool) -> Vec<EndpointStatus> {
    let mut out = Vec::new();
    for e in endpoints::list(state_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.env == env)
    {
        let health = if live {
            let c = Oscar::new(
                &e.name,
                &e.oscar_url,
                "",
                crate::state::Secret::default(),
                e.ssl_verify,
                Duration::from_secs(5),
            );
            Some(match c {
                Ok(c) => c
                    .health()
                    .await
                    .map_or_else(|err| err.to_string(), |()| "ok".into()),
                Err(err) => err.to_string(),
            })
        } else {
            None
        };
        out.push(EndpointStatus {
            name: e.name,
            oscar_url: e.oscar_url,
            tier: e.tier,
            health,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arches(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(h, a)| ((*h).to_string(), (*a).to_string()))
            .collect()
    }

    #[test]
    fn architectures_are_checked_and_summarised() {
        assert!(check_arch(&arches(&[("a", "amd64"), ("b", "arm64")])).is_ok());
        let e = check_arch(&arches(&[("pi", "arm")])).expect_err("32-bit");
        assert!(e.to_string().contains("`pi` is arm"), "{e}");
        let recipe = crate::files::load_recipe(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/farm-oscar.yaml"),
        )
        .expect("example recipe");
        let (a, gpu) = arch_and_gpu(&recipe.env, &arches(&[("x", "arm64"), ("y", "arm64")]));
        assert_eq!(a, "arm64");
        assert!(
            !gpu || recipe
                .env
                .hosts
                .values()
                .any(|h| h.labels.contains_key("nvidia.com/gpu.present"))
        );
        let (a, _) = arch_and_gpu(&recipe.env, &arches(&[("x", "arm64"), ("y", "amd64")]));
        assert_eq!(a, "mixed");
    }

    /// A first server as the removal sees it: manifest files, the objects k3s made
    /// of them, and objects that never go (a stuck finalizer). It understands the
    /// few scripts `retire` sends and records them.
    #[derive(Default)]
    struct FakeServer {
        files: std::sync::Mutex<BTreeMap<String, String>>,
        objects: std::sync::Mutex<Vec<String>>,
        stuck: Vec<String>,
        log: std::sync::Mutex<Vec<String>>,
    }

    impl FakeServer {
        fn new(files: &[(&str, &str)], objects: &[&str]) -> Self {
            FakeServer {
                files: std::sync::Mutex::new(
                    files
                        .iter()
                        .map(|(f, t)| ((*f).to_string(), (*t).to_string()))
                        .collect(),
                ),
                objects: std::sync::Mutex::new(objects.iter().map(|o| (*o).to_string()).collect()),
                ..FakeServer::default()
            }
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }
        fn answer(&self, script: &str) -> String {
            let mut files = self.files.lock().expect("files");
            if script.starts_with("cd ") {
                return files
                    .keys()
                    .map(|f| match removal::live_name(f) {
                        Some(_) => format!("retiring {f}\n"),
                        None => format!(
                            "live {f} {} 600\n",
                            crate::k3s::sha256_hex(files[f].as_bytes())
                        ),
                    })
                    .collect();
            }
            let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.as_slice() {
                ["cat", p] => {
                    self.log
                        .lock()
                        .expect("log")
                        .push(format!("read {}", base(p)));
                    files.get(&base(p)).cloned().unwrap_or_default()
                }
                ["mv", "-f", a, b] => {
                    self.log
                        .lock()
                        .expect("log")
                        .push(format!("hide {}", base(a)));
                    let t = files.remove(&base(a)).unwrap_or_default();
                    files.insert(base(b), t);
                    String::new()
                }
                ["rm", "-f", p] => {
                    self.log
                        .lock()
                        .expect("log")
                        .push(format!("rm {}", base(p)));
                    files.remove(&base(p));
                    String::new()
                }
                _ => {
                    // A round: `chk RESOURCE NS NAME [-n NS]` lines.
                    let mut objects = self.objects.lock().expect("objects");
                    let mut out = String::new();
                    for l in script.lines().filter(|l| l.starts_with("chk ")) {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        let id = format!("{} {}", w[1], w[3]);
                        self.log.lock().expect("log").push(format!("delete {id}"));
                        if self.stuck.contains(&id) {
                            out.push_str(&format!("present {} {} {} \n", w[1], w[2], w[3]));
                        } else {
                            objects.retain(|o| o != &id);
                            out.push_str(&format!("gone {} {} {}\n", w[1], w[2], w[3]));
                        }
                    }
                    out
                }
            }
        }
    }

    impl Remote for FakeServer {
        async fn run(
            &self,
            script: &str,
            _stdin: Option<&[u8]>,
            _root: bool,
            _timeout: Duration,
        ) -> Result<crate::ssh::Output, crate::ssh::SshError> {
            Ok(crate::ssh::Output {
                status: Some(0),
                stdout: self.answer(script),
                stderr: String::new(),
            })
        }
        fn name(&self) -> &str {
            "srv"
        }
    }

    const OSCAR: &str = "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: oscar\n  namespace: kube-system\nspec:\n  chart: oscar\n";
    const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: oscar\n";

    #[tokio::test]
    async fn a_removed_layer_is_hidden_then_uninstalled_last_file_first() {
        let srv = FakeServer::new(
            &[
                ("continuum-oscar-00-namespaces.yaml", NAMESPACES),
                ("continuum-oscar-50-oscar.yaml", OSCAR),
            ],
            &["helmcharts.helm.cattle.io oscar", "namespaces oscar"],
        );
        assert!(remove_layer(&srv).await.expect("removed"));
        assert_eq!(
            srv.log(),
            vec![
                "read continuum-oscar-50-oscar.yaml",
                "hide continuum-oscar-50-oscar.yaml",
                "delete helmcharts.helm.cattle.io oscar",
                "delete addons.k3s.cattle.io continuum-oscar-50-oscar",
                "rm .continuum-oscar-50-oscar.yaml.removing",
                "read continuum-oscar-00-namespaces.yaml",
                "hide continuum-oscar-00-namespaces.yaml",
                "delete namespaces oscar",
                "delete addons.k3s.cattle.io continuum-oscar-00-namespaces",
                "rm .continuum-oscar-00-namespaces.yaml.removing",
            ]
        );
        assert!(srv.files.lock().expect("files").is_empty());
        assert!(srv.objects.lock().expect("objects").is_empty());
        assert!(
            !remove_layer(&srv).await.expect("again"),
            "nothing left to do"
        );
    }

    #[tokio::test]
    async fn a_stuck_uninstall_times_out_naming_chart_and_host_and_a_rerun_resumes() {
        let mut srv = FakeServer::new(
            &[("continuum-oscar-50-oscar.yaml", OSCAR)],
            &["helmcharts.helm.cattle.io oscar"],
        );
        srv.stuck = vec!["helmcharts.helm.cattle.io oscar".into()];
        let have = present(&srv).await.expect("listing");
        let live: Vec<String> = have.live.keys().cloned().collect();
        let e = retire(&srv, &live, &[], Duration::ZERO, Duration::ZERO)
            .await
            .expect_err("stuck");
        let t = e.to_string();
        assert!(
            t.contains("removing continuum-oscar-50-oscar.yaml on `srv`: HelmChart kube-system/oscar is still there after 0 s"),
            "{t}"
        );
        assert!(
            t.contains("helm-delete-oscar")
                && t.contains(".continuum-oscar-50-oscar.yaml.removing"),
            "{t}"
        );
        // The file is hidden from k3s but kept; the next run finishes from it.
        let have = present(&srv).await.expect("listing");
        assert!(have.live.is_empty());
        assert_eq!(
            have.retiring,
            vec!["continuum-oscar-50-oscar.yaml".to_string()]
        );
        srv.stuck.clear();
        srv.log.lock().expect("log").clear();
        assert!(remove_layer(&srv).await.expect("resumed"));
        assert_eq!(
            srv.log(),
            vec![
                "read .continuum-oscar-50-oscar.yaml.removing",
                "delete helmcharts.helm.cattle.io oscar",
                "delete addons.k3s.cattle.io continuum-oscar-50-oscar",
                "rm .continuum-oscar-50-oscar.yaml.removing",
            ]
        );
    }

    #[tokio::test]
    async fn an_unreadable_manifest_is_left_in_place_with_a_clear_error() {
        let srv = FakeServer::new(
            &[(
                "continuum-oscar-60-x.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            )],
            &[],
        );
        let e = remove_layer(&srv).await.expect_err("unknown kind");
        let t = e.to_string();
        assert!(
            t.contains("cannot remove /var/lib/rancher/k3s/server/manifests/continuum-oscar-60-x.yaml on `srv`")
                && t.contains("Deployment"),
            "{t}"
        );
        assert_eq!(
            srv.log(),
            vec!["read continuum-oscar-60-x.yaml"],
            "not hidden"
        );
    }
}
