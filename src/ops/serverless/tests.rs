//! Unit tests of the serverless steps (no network: scripted answers).

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
        t.contains("helm-delete-oscar") && t.contains(".continuum-oscar-50-oscar.yaml.removing"),
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
        t.contains(
            "cannot remove /var/lib/rancher/k3s/server/manifests/continuum-oscar-60-x.yaml on `srv`"
        ) && t.contains("Deployment"),
        "{t}"
    );
    assert_eq!(
        srv.log(),
        vec!["read continuum-oscar-60-x.yaml"],
        "not hidden"
    );
}
