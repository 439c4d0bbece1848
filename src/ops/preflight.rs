//! Checks `up` makes before it changes anything: every per-arch k3s binary
//! and air-gap image tarball the plan needs is in the bundle. The arch comes from the inventory's probe or from
//! state (hosts contacted before); hosts of unknown arch are checked again on the host
//! by `k3s::apply_node`.

use crate::graph::{Action, Plan};
use crate::k3s::{K3sError, bundle_binary, images_file, images_names};
use crate::recipe::{Environment, Images, Install};
use crate::state::State;

/// k3s's name for a recorded or probed architecture of `host`.
fn arch_of(env: &Environment, state: &State, host: &str) -> Result<Option<String>, K3sError> {
    if let Some(f) = env.hosts.get(host).and_then(|h| h.probed.as_deref()) {
        return match f.k3s_arch() {
            Some(a) => Ok(Some(a.to_string())),
            None => Err(K3sError::UnsupportedArch {
                host: host.to_string(),
                arch: f.arch.clone(),
            }),
        };
    }
    Ok(state.hosts.get(host).and_then(|h| h.arch.clone()))
}

pub fn check_artifacts(env: &Environment, state: &State, plan: &Plan) -> Result<(), K3sError> {
    let Install::Bundle { dir, images } = &env.cluster.install else {
        return Ok(());
    };
    for c in &plan.changes {
        let (Some(host), Some(_), Action::Create | Action::Update) = (&c.host, c.role, c.action)
        else {
            continue;
        };
        let Some(arch) = arch_of(env, state, host)? else {
            continue;
        };
        let file = bundle_binary(&arch);
        if !dir.join(file).is_file() {
            return Err(K3sError::MissingBinary {
                host: host.clone(),
                arch,
                dir: dir.clone(),
                file: file.to_string(),
            });
        }
        // Offline hosts get CoreDNS and pause only from the air-gap images, unless the
        // recipe says they pull from a registry (`install.images: registry`).
        if *images == Images::Bundle && images_file(dir, &arch).is_none() {
            return Err(K3sError::MissingImages {
                host: host.clone(),
                expected: images_names(&arch).join(" or "),
                arch,
                dir: dir.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{self, Kind};

    /// A recipe over a probed Pi (arm64, iptables 1.8.3) and a probed Jetson.
    fn env(dir: &std::path::Path) -> Environment {
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).expect("bundle");
        for f in ["install.sh", "k3s"] {
            std::fs::write(bundle.join(f), "#!/bin/sh\n").expect("write");
        }
        std::fs::write(
            dir.join("inv.yaml"),
            "hosts:\n  - name: srv\n    address: 10.0.0.1\n  - name: pi\n    address: 10.0.0.2\n    probed: {arch: aarch64, iptables: 1.8.3, pi_model: Raspberry Pi 5 Model B Rev 1.0, cgroup_controllers: [cpu]}\n  - name: jet\n    address: 10.0.0.3\n    probed: {arch: aarch64, jetson_model: NVIDIA Jetson Orin Nano Developer Kit, l4t: 36.3.0}\n",
        )
        .expect("inventory");
        std::fs::write(
            dir.join("r.yaml"),
            format!(
                "name: t\ninventory: inv.yaml\nk3s:\n  version: v1.31.4+k3s1\n  install: {{source: bundle, bundle: {}}}\n  servers: [srv]\n  nvidia_default_runtime: true\n",
                bundle.display()
            ),
        )
        .expect("recipe");
        crate::files::load_recipe(&dir.join("r.yaml"))
            .expect("load")
            .env
    }

    #[test]
    fn device_nodes_labels_and_arch_check() {
        let dir = tempfile::tempdir().expect("tmp");
        let env = env(dir.path());
        let rg = graph::build(&env).expect("graph");
        let ix = |id: &str| rg.index[id];
        assert!(matches!(
            rg.graph[ix("device-prep/pi")].kind,
            Kind::DevicePrep { .. }
        ));
        assert!(
            rg.graph
                .contains_edge(ix("device-prep/pi"), ix("k3s-agent/pi"))
        );
        assert!(
            rg.graph
                .contains_edge(ix("k3s-agent/jet"), ix("gpu-runtime/jet"))
        );
        assert!(
            rg.graph
                .contains_edge(ix("gpu-runtime/jet"), ix(graph::CLUSTER_READY))
        );
        assert!(!rg.index.contains_key("device-prep/srv"));
        let pi = &rg.graph[ix("k3s-agent/pi")].attrs;
        assert_eq!(pi["prefer-bundled-bin"], serde_json::json!(true));
        let jet = &rg.graph[ix("k3s-agent/jet")].attrs;
        assert_eq!(jet["default-runtime"], serde_json::json!("nvidia"));
        assert!(
            jet["node-label"]
                .to_string()
                .contains("nvidia.com/gpu.present=true")
        );
        assert!(!pi.contains_key("default-runtime"));

        let plan = graph::plan(&env, &rg, None);
        let err = check_artifacts(&env, &State::new("t"), &plan).expect_err("no k3s-arm64");
        assert!(err.to_string().contains("k3s-arm64"), "{err}");
        let Install::Bundle { dir: b, .. } = &env.cluster.install else {
            panic!("bundle install expected");
        };
        std::fs::write(b.join("k3s-arm64"), "#!/bin/sh\n").expect("write");
        // The air-gap images of every architecture in use, too.
        let err = check_artifacts(&env, &State::new("t"), &plan).expect_err("no arm64 images");
        assert!(
            err.to_string()
                .contains("k3s-airgap-images-arm64.tar.zst or k3s-airgap-images-arm64.tar.gz"),
            "{err}"
        );
        std::fs::write(b.join("k3s-airgap-images-arm64.tar.gz"), "images").expect("write");
        check_artifacts(&env, &State::new("t"), &plan).expect("binaries and images present");
    }
}
