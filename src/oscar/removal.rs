//! What removing one of the layer's manifest files must delete from the cluster, and
//! the shell that does it (docs/k3s.md, "Manifests, the deploy controller and
//! helm-controller").
//!
//! k3s's deploy controller leaves the objects of a deleted manifest file in place, so
//! a component is gone only once continuum has deleted them itself: the HelmCharts
//! (helm-controller's finalizer then uninstalls each release), the custom resources an
//! operator acts on (before that operator's chart goes), the namespaces the file
//! created, and the file's `Addon` record (else an identical file written later is
//! skipped as already applied). This module is pure: it reads a manifest's text and
//! produces the ordered deletions and the kubectl scripts; `ops::serverless` runs them.
//!
//! Invariants: every object named in a file is deleted or the removal fails naming it;
//! a kind continuum does not know how to delete is an error, never skipped; names are
//! RFC 1123, so the scripts quote nothing that came from outside; deletions are
//! idempotent (`--ignore-not-found`, a missing resource type counts as gone), so a
//! rerun after a crash converges.

use serde_json::Value;

use crate::ssh::quote;

/// Suffix of a manifest file that is being retired: k3s skips dot-files, so the file
/// stays readable on the server (for a resumed removal) without being applied again.
pub const RETIRING_SUFFIX: &str = ".removing";
/// Namespace of k3s's `Addon` records and of continuum's HelmCharts.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// The hidden name a manifest file gets while its objects are deleted.
pub fn retiring_name(file: &str) -> String {
    format!(".{file}{RETIRING_SUFFIX}")
}

/// The manifest file a retiring name stands for.
pub fn live_name(retiring: &str) -> Option<&str> {
    retiring.strip_prefix('.')?.strip_suffix(RETIRING_SUFFIX)
}

/// The name of the `Addon` k3s records a manifest file under: its base name up to
/// the first dot (docs/k3s.md, "Manifests, the deploy controller and helm-controller").
pub fn addon_name(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// One object to delete, as kubectl names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// `Kind` as written in the manifest (for messages).
    pub kind: String,
    /// kubectl's fully qualified resource (`helmcharts.helm.cattle.io`).
    pub resource: &'static str,
    pub name: String,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
}

impl Deletion {
    /// `HelmChart kube-system/oscar`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// What removes the object once it is marked for deletion, for a timeout message.
    pub fn who_finishes(&self) -> String {
        match self.resource {
            HELMCHART => format!(
                "helm-controller uninstalls the release and then drops its finalizer wrangler.cattle.io/on-helm-chart-remove; see `k3s kubectl -n {ns} get job helm-delete-{n}` and its pod's log",
                ns = self.namespace.as_deref().unwrap_or(SYSTEM_NAMESPACE),
                n = self.name
            ),
            KNATIVE_SERVING => "the Knative operator removes Knative Serving and then drops its finalizer knativeservings.operator.knative.dev; is the knative-operator pod still running?".to_string(),
            NAMESPACES => format!(
                "the namespace controller deletes everything in it first; see `k3s kubectl get all -n {}`",
                self.name
            ),
            _ => "nothing should hold this object; see `k3s kubectl get` on it".to_string(),
        }
    }
}

const HELMCHART: &str = "helmcharts.helm.cattle.io";
const HELMCHARTCONFIG: &str = "helmchartconfigs.helm.cattle.io";
const KNATIVE_SERVING: &str = "knativeservings.operator.knative.dev";
const NAMESPACES: &str = "namespaces";
const ADDON: &str = "addons.k3s.cattle.io";
const GATEWAY: &str = "gateways.gateway.networking.k8s.io";
const SECRETS: &str = "secrets";

/// The kinds continuum's templates render: (API group, kind) -> (kubectl resource,
/// namespaced, stage). Stages run in order, each waiting until its objects are gone:
/// 0 custom resources a controller acts on (while it still runs: the Knative operator,
/// Traefik's Gateway API provider), 1 HelmChartConfigs, 2 HelmCharts (the uninstall)
/// and the layer's Secrets (the charts' credentials, kept until then), 3 namespaces
/// (after what is in them), 4 the file's Addon record.
const KINDS: &[(&str, &str, &str, bool, u8)] = &[
    (
        "operator.knative.dev",
        "KnativeServing",
        KNATIVE_SERVING,
        true,
        0,
    ),
    ("gateway.networking.k8s.io", "Gateway", GATEWAY, true, 0),
    ("", "Secret", SECRETS, true, 2),
    (
        "helm.cattle.io",
        "HelmChartConfig",
        HELMCHARTCONFIG,
        true,
        1,
    ),
    ("helm.cattle.io", "HelmChart", HELMCHART, true, 2),
    ("", "Namespace", NAMESPACES, false, 3),
];
const ADDON_STAGE: u8 = 4;

/// Why a manifest's objects cannot be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("it is not YAML continuum can read: {detail}")]
    Yaml { detail: String },
    #[error("document {index} is not a mapping")]
    NotMapping { index: usize },
    #[error("document {index} lacks {field}")]
    Missing { index: usize, field: &'static str },
    #[error("{kind} `{name}` is not a valid Kubernetes name")]
    BadName { kind: String, name: String },
    #[error(
        "it defines a {kind} (apiVersion {api_version}), which continuum does not know how to delete"
    )]
    UnknownKind { kind: String, api_version: String },
}

fn group_of(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group)
}

/// RFC 1123 subdomain (metadata.name of every kind continuum renders).
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn field<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    doc.pointer(path).and_then(Value::as_str)
}

/// Every object a manifest file defines (a `List` counts as its items, as k3s reads
/// it), with what deletes it, grouped into stages in the order they must go, and the
/// file's Addon record last.
pub fn deletions(file: &str, text: &str) -> Result<Vec<Vec<Deletion>>, ManifestError> {
    // The parser's first line only: the rest quotes the text, which holds passwords.
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
        detail: e.to_string().lines().next().unwrap_or("").to_string(),
    })?;
    let mut objects = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let index = i + 1;
        if doc.is_null() {
            continue;
        }
        if !doc.is_object() {
            return Err(ManifestError::NotMapping { index });
        }
        if field(&doc, "/kind").is_some_and(|k| k.ends_with("List")) {
            let items =
                doc.get("items")
                    .and_then(Value::as_array)
                    .ok_or(ManifestError::Missing {
                        index,
                        field: "items",
                    })?;
            objects.extend(items.iter().cloned().map(|d| (index, d)));
        } else {
            objects.push((index, doc));
        }
    }
    let mut stages: Vec<Vec<Deletion>> = vec![Vec::new(); usize::from(ADDON_STAGE) + 1];
    for (index, doc) in objects {
        let api_version = field(&doc, "/apiVersion").ok_or(ManifestError::Missing {
            index,
            field: "apiVersion",
        })?;
        let kind = field(&doc, "/kind").ok_or(ManifestError::Missing {
            index,
            field: "kind",
        })?;
        let name = field(&doc, "/metadata/name").ok_or(ManifestError::Missing {
            index,
            field: "metadata.name",
        })?;
        let group = group_of(api_version);
        let Some(&(_, _, resource, namespaced, stage)) =
            KINDS.iter().find(|(g, k, ..)| *g == group && *k == kind)
        else {
            return Err(ManifestError::UnknownKind {
                kind: kind.to_string(),
                api_version: api_version.to_string(),
            });
        };
        // wrangler's apply puts a namespaced object without one in `default`.
        let namespace = namespaced.then(|| {
            field(&doc, "/metadata/namespace")
                .unwrap_or("default")
                .to_string()
        });
        for n in std::iter::once(name).chain(namespace.as_deref()) {
            if !valid_name(n) {
                return Err(ManifestError::BadName {
                    kind: kind.to_string(),
                    name: n.to_string(),
                });
            }
        }
        let d = Deletion {
            kind: kind.to_string(),
            resource,
            name: name.to_string(),
            namespace,
        };
        let stage = &mut stages[usize::from(stage)];
        if !stage.contains(&d) {
            stage.push(d);
        }
    }
    let addon = addon_name(file);
    if valid_name(addon) {
        stages[usize::from(ADDON_STAGE)].push(Deletion {
            kind: "Addon".into(),
            resource: ADDON,
            name: addon.to_string(),
            namespace: Some(SYSTEM_NAMESPACE.into()),
        });
    }
    stages.retain(|s| !s.is_empty());
    Ok(stages)
}

/// One round of a stage: ask the API to delete each object (no wait: the caller
/// polls with its own timeout) and report each as `gone`, `present` or `error`, one
/// line per object: `STATE RESOURCE NAMESPACE|- NAME [detail]`. A resource type the
/// server does not have (an operator's CRD removed with its chart) means the object
/// is gone too; any other failure (the API restarting) is reported, not fatal.
pub fn round_script(bin: &str, stage: &[Deletion]) -> String {
    let mut s = format!(
        "chk() {{ r=$1; ns=$2; n=$3; shift 3\n\
         e=$({bin} kubectl delete \"$r\" \"$n\" \"$@\" --ignore-not-found --wait=false 2>&1 >/dev/null)\n\
         o=$({bin} kubectl get \"$r\" \"$n\" \"$@\" --ignore-not-found -o name 2>&1); rc=$?\n\
         if [ $rc -ne 0 ]; then case \"$o\" in *\"doesn't have a resource type\"*) echo \"gone $r $ns $n\";; *) echo \"error $r $ns $n $(printf '%s' \"$o\" | head -n 1)\";; esac\n\
         elif [ -n \"$o\" ]; then echo \"present $r $ns $n $(printf '%s' \"$e\" | head -n 1)\"\n\
         else echo \"gone $r $ns $n\"; fi; }}\n"
    );
    for d in stage {
        let ns = d.namespace.as_deref();
        s.push_str(&format!(
            "chk {} {} {}{}\n",
            quote(d.resource),
            quote(ns.unwrap_or("-")),
            quote(&d.name),
            ns.map(|n| format!(" -n {}", quote(n))).unwrap_or_default(),
        ));
    }
    s
}

/// An object's state after one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    Gone,
    /// Still there; the delete's own message, if it printed one.
    Present(String),
    /// kubectl could not tell (the API restarting): its message.
    Unknown(String),
}

/// Parse a round's output: the state of each object of `stage`, in order. An object
/// the output does not mention is `Unknown` (the script was cut short).
pub fn parse_round(stage: &[Deletion], out: &str) -> Vec<Round> {
    stage
        .iter()
        .map(|d| {
            let ns = d.namespace.as_deref().unwrap_or("-");
            out.lines()
                .find_map(|l| {
                    let mut p = l.splitn(5, ' ');
                    let state = p.next()?;
                    if p.next()? != d.resource || p.next()? != ns || p.next()? != d.name {
                        return None;
                    }
                    let detail = p.next().unwrap_or("").trim().to_string();
                    Some(match state {
                        "gone" => Round::Gone,
                        "present" => Round::Present(detail),
                        _ => Round::Unknown(detail),
                    })
                })
                .unwrap_or_else(|| Round::Unknown("no answer for it".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::oscar as manifests;

    /// Both profiles, with and without Knative, in both ingress modes.
    fn sections() -> Vec<crate::recipe::serverless::Serverless> {
        use crate::recipe::serverless::{
            GivenCredentials, IngressMode, OscarCliTarget, Profile, Serverless, Tier,
        };
        let mut out = Vec::new();
        for profile in [Profile::Cloud, Profile::Edge] {
            for ingress in [IngressMode::Nginx, IngressMode::Gateway] {
                for knative in [true, false] {
                    out.push(Serverless {
                        profile,
                        tier: Tier::Edge,
                        ingress,
                        endpoint: "http://oscar.example.org".into(),
                        cluster_id: "farm".into(),
                        knative,
                        gpu: None,
                        readiness_timeout: std::time::Duration::from_secs(60),
                        credentials: GivenCredentials::default(),
                        values: std::collections::BTreeMap::new(),
                        oscar_cli: OscarCliTarget {
                            path: None,
                            set_default: false,
                            ssl_verify: true,
                        },
                        servicelb: true,
                        oscar: manifests::DEFAULT_OSCAR,
                        resource_manager: true,
                        rescheduler: false,
                        tls: None,
                        values_secrets: false,
                    });
                }
            }
        }
        out
    }

    fn names(stages: &[Vec<Deletion>]) -> Vec<Vec<String>> {
        stages
            .iter()
            .map(|s| s.iter().map(Deletion::describe).collect())
            .collect()
    }

    #[test]
    fn retiring_names_are_hidden_from_k3s_and_reversible() {
        let r = retiring_name("continuum-oscar-50-oscar.yaml");
        assert_eq!(r, ".continuum-oscar-50-oscar.yaml.removing");
        assert!(r.starts_with('.'), "k3s skips dot-files");
        assert_eq!(live_name(&r), Some("continuum-oscar-50-oscar.yaml"));
        assert_eq!(live_name("continuum-oscar-50-oscar.yaml"), None);
        assert_eq!(
            addon_name("continuum-oscar-50-oscar.yaml"),
            "continuum-oscar-50-oscar"
        );
        assert_eq!(addon_name("a.b.yaml"), "a");
    }

    #[test]
    fn every_rendered_manifest_has_known_kinds_in_a_safe_order() {
        // Every file continuum renders, in both profiles and ingress modes, can be
        // taken out again: no kind it does not know how to delete.
        let creds = manifests::placeholder_credentials();
        for s in sections() {
            for m in manifests::render("farm", &s, &creds).expect("render") {
                let stages =
                    deletions(&m.file, &m.text).unwrap_or_else(|e| panic!("{}: {e}", m.file));
                let last = stages.last().expect("the Addon");
                assert_eq!(last.len(), 1);
                assert_eq!(last[0].resource, ADDON);
                assert_eq!(last[0].name, addon_name(&m.file));
            }
        }
    }

    #[test]
    fn knative_serving_goes_before_its_namespace_and_charts_before_namespaces() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: knative-serving\n---\napiVersion: operator.knative.dev/v1beta1\nkind: KnativeServing\nmetadata:\n  name: knative-serving\n  namespace: knative-serving\n";
        let stages = deletions("continuum-oscar-41-knative-serving.yaml", text).expect("ok");
        assert_eq!(
            names(&stages),
            vec![
                vec!["KnativeServing knative-serving/knative-serving".to_string()],
                vec!["Namespace knative-serving".to_string()],
                vec!["Addon kube-system/continuum-oscar-41-knative-serving".to_string()],
            ]
        );
        let text = "# a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: oscar}\n- apiVersion: helm.cattle.io/v1\n  kind: HelmChart\n  metadata: {name: oscar, namespace: kube-system}\n- apiVersion: helm.cattle.io/v1\n  kind: HelmChartConfig\n  metadata: {name: traefik, namespace: kube-system}\n";
        let stages = deletions("x.yaml", text).expect("ok");
        assert_eq!(
            names(&stages),
            vec![
                vec!["HelmChartConfig kube-system/traefik".to_string()],
                vec!["HelmChart kube-system/oscar".to_string()],
                vec!["Namespace oscar".to_string()],
                vec!["Addon kube-system/x".to_string()],
            ]
        );
    }

    #[test]
    fn unknown_kinds_and_bad_names_are_refused() {
        let e = deletions(
            "f.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
        )
        .expect_err("unknown");
        assert!(
            e.to_string()
                .contains("Deployment (apiVersion apps/v1), which continuum does not know"),
            "{e}"
        );
        let e = deletions(
            "f.yaml",
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: \"x; rm -rf /\"\n  namespace: kube-system\n",
        )
        .expect_err("bad name");
        assert!(matches!(e, ManifestError::BadName { .. }), "{e}");
        let e = deletions("f.yaml", "kind: HelmChart\nmetadata: {name: x}\n").expect_err("no api");
        assert_eq!(
            e,
            ManifestError::Missing {
                index: 1,
                field: "apiVersion"
            }
        );
        let e = deletions("f.yaml", "authPass: secret-pass-123\n  b: [\n").expect_err("not YAML");
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(
            !e.to_string().contains("secret-pass"),
            "no manifest text: {e}"
        );
        // No namespace: wrangler's apply puts it in `default`.
        let s = deletions(
            "f.yaml",
            "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: x\n",
        )
        .expect("ok");
        assert_eq!(s[0][0].namespace.as_deref(), Some("default"));
    }

    #[test]
    fn rounds_are_parsed_per_object() {
        let stage = vec![
            Deletion {
                kind: "HelmChart".into(),
                resource: HELMCHART,
                name: "oscar".into(),
                namespace: Some("kube-system".into()),
            },
            Deletion {
                kind: "Namespace".into(),
                resource: NAMESPACES,
                name: "oscar".into(),
                namespace: None,
            },
            Deletion {
                kind: "HelmChart".into(),
                resource: HELMCHART,
                name: "minio".into(),
                namespace: Some("kube-system".into()),
            },
        ];
        let script = round_script("/usr/local/bin/k3s", &stage);
        assert!(
            script.contains("chk helmcharts.helm.cattle.io kube-system oscar -n kube-system\n")
        );
        assert!(script.contains("chk namespaces - oscar\n"));
        assert!(script.contains("--ignore-not-found --wait=false"));
        let out = "present helmcharts.helm.cattle.io kube-system oscar \ngone namespaces - oscar\nerror helmcharts.helm.cattle.io kube-system minio The connection to the server 127.0.0.1:6443 was refused\n";
        assert_eq!(
            parse_round(&stage, out),
            vec![
                Round::Present(String::new()),
                Round::Gone,
                Round::Unknown("The connection to the server 127.0.0.1:6443 was refused".into()),
            ]
        );
        assert_eq!(
            parse_round(&stage[..1], ""),
            vec![Round::Unknown("no answer for it".into())]
        );
    }

    #[test]
    fn timeout_hints_name_what_finishes_the_deletion() {
        let d = Deletion {
            kind: "HelmChart".into(),
            resource: HELMCHART,
            name: "oscar".into(),
            namespace: Some("kube-system".into()),
        };
        assert!(d.who_finishes().contains("helm-delete-oscar"));
        assert!(
            d.who_finishes()
                .contains("wrangler.cattle.io/on-helm-chart-remove")
        );
    }
}
