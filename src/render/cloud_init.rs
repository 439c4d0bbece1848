//! The user data of the AWS site's instances: a cloud-config from
//! templates/cloud-init.yaml.tera naming the environment and instance group. It holds
//! nothing secret (anyone on the instance can read user data); k3s is configured over
//! SSH afterwards (ARCHITECTURE.md, "Data path").

const TEMPLATE: &str = include_str!("../../templates/cloud-init.yaml.tera");

/// The cloud-config of an instance of `group` in environment `env`.
pub fn user_data(env: &str, group: &str) -> Result<String, tera::Error> {
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("group", group);
    tera::Tera::one_off(TEMPLATE, &ctx, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_environment_and_group_and_stays_a_cloud_config() {
        let text = user_data("prod", "cp").expect("render");
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(text.contains("env=prod\n"), "{text}");
        assert!(text.contains("group=cp\n"), "{text}");
        assert!(!text.contains("{{"), "{text}");
    }
}
