//! Validation before spend: every instance type exists in the region and is offered
//! in a zone the subnet can use, every image exists, runs on its type's architecture
//! (x86_64 or arm64; never i386) and fits the root volume. Errors name the recipe
//! position (`file:line:col: error: ...`); nothing is created when one is found.

use std::collections::{BTreeMap, BTreeSet};

use super::{CloudState, Options, ProvisionError, ec2};
use crate::aws::{Ec2Api, Ec2Error, ImageInfo, ImageQuery, retry};
use crate::recipe::{AwsSite, ImageRef, InstanceGroup};

/// Architectures continuum runs k3s on, preferred first.
const ARCHITECTURES: [&str; 2] = ["x86_64", "arm64"];

/// The image chosen for each instance group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub id: String,
    pub architecture: String,
    pub root_device: Option<String>,
}

/// What validation found: the images, and the availability zones that offer every
/// instance type of the site (sorted; the subnet must be in one of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    pub images: BTreeMap<String, ResolvedImage>,
    pub zones: Vec<String>,
}

/// The architecture to look an image up for, from the type's list: x86_64 when the
/// type runs it, else arm64; never i386 (EC2 lists t2's i386 first).
pub fn pick_architecture(type_archs: &[String]) -> Option<&'static str> {
    ARCHITECTURES
        .into_iter()
        .find(|a| type_archs.iter().any(|t| t == a))
}

/// Check the site against the region before anything is created.
pub async fn validate(
    api: &dyn Ec2Api,
    site: &AwsSite,
    opts: &Options,
) -> Result<Validated, ProvisionError> {
    let mut errors = Vec::new();
    let region = api.region().to_string();
    let names: Vec<String> = site
        .groups
        .iter()
        .map(|g| g.instance_type.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let archs = instance_types(api, &names, opts).await?;
    for g in &site.groups {
        if !archs.contains_key(&g.instance_type) {
            errors.push(format!(
                "{}: error: instance type `{}` does not exist in region {region}",
                g.at_type, g.instance_type
            ));
        }
    }
    let zones = zones(api, site, &names, &archs, &mut errors, opts).await?;
    let by_id = images_by_id(api, site, opts).await?;
    let mut images = BTreeMap::new();
    for g in &site.groups {
        let type_archs = archs.get(&g.instance_type);
        let Some(image) = image_of(api, g, type_archs, &by_id, &region, &mut errors, opts).await?
        else {
            continue;
        };
        if let Some(e) = mismatch(g, type_archs, &image) {
            errors.push(e);
            continue;
        }
        images.insert(
            g.name.clone(),
            ResolvedImage {
                id: image.id,
                architecture: image.architecture,
                root_device: image.root_device,
            },
        );
    }
    if errors.is_empty() {
        Ok(Validated { images, zones })
    } else {
        Err(ProvisionError::Invalid(errors))
    }
}

/// Instance type -> architectures: one call for all of them (an unknown one fails the
/// whole call, so fall back to one call per type only to name the culprit).
async fn instance_types(
    api: &dyn Ec2Api,
    names: &[String],
    opts: &Options,
) -> Result<BTreeMap<String, Vec<String>>, ProvisionError> {
    let mut archs = BTreeMap::new();
    match retry(opts.retry, || api.describe_instance_types(names)).await {
        Ok(types) => archs.extend(types.into_iter().map(|t| (t.name, t.architectures))),
        Err(e @ (Ec2Error::Api { .. } | Ec2Error::NotFound { .. })) => {
            tracing::debug!(error = %e, "instance type lookup failed; checking one by one");
            for n in names {
                if let Ok(types) = retry(opts.retry, || {
                    api.describe_instance_types(std::slice::from_ref(n))
                })
                .await
                {
                    archs.extend(types.into_iter().map(|t| (t.name, t.architectures)));
                }
            }
        }
        Err(e) => return Err(ec2("instance types")(e)),
    }
    Ok(archs)
}

/// The zones offering every (existing) instance type of the site; errors when the
/// recipe's zone lacks one, or no zone has them all.
async fn zones(
    api: &dyn Ec2Api,
    site: &AwsSite,
    names: &[String],
    archs: &BTreeMap<String, Vec<String>>,
    errors: &mut Vec<String>,
    opts: &Options,
) -> Result<Vec<String>, ProvisionError> {
    let known: Vec<String> = names
        .iter()
        .filter(|n| archs.contains_key(*n))
        .cloned()
        .collect();
    if known.is_empty() {
        return Ok(Vec::new());
    }
    let offerings = retry(opts.retry, || api.instance_type_offerings(&known))
        .await
        .map_err(ec2("instance type offerings"))?;
    let mut by_type: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for o in &offerings {
        by_type
            .entry(o.instance_type.as_str())
            .or_default()
            .insert(o.zone.clone());
    }
    let offered_in = |t: &str| by_type.get(t).cloned().unwrap_or_default();
    let list = |z: &BTreeSet<String>| {
        if z.is_empty() {
            "none".to_string()
        } else {
            z.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    if let Some(az) = &site.availability_zone {
        let mut ok = true;
        for g in site
            .groups
            .iter()
            .filter(|g| known.contains(&g.instance_type))
        {
            let z = offered_in(&g.instance_type);
            if !z.contains(az) {
                ok = false;
                errors.push(format!(
                    "{}: error: instance type `{}` is not offered in availability zone {az} (offered in: {})",
                    g.at_type,
                    g.instance_type,
                    list(&z)
                ));
            }
        }
        return Ok(if ok { vec![az.clone()] } else { Vec::new() });
    }
    let mut common: Option<BTreeSet<String>> = None;
    for t in &known {
        let z = offered_in(t);
        common = Some(match common {
            None => z,
            Some(c) => c.intersection(&z).cloned().collect(),
        });
    }
    let common = common.unwrap_or_default();
    if common.is_empty()
        && let Some(g) = site
            .groups
            .iter()
            .find(|g| known.contains(&g.instance_type))
    {
        let each: Vec<String> = known
            .iter()
            .map(|t| format!("{t} in {}", list(&offered_in(t))))
            .collect();
        errors.push(format!(
            "{}: error: no availability zone of region {} offers every instance type of the site ({}): one subnet holds them all, so choose types offered in a common zone",
            g.at_type,
            api.region(),
            each.join("; ")
        ));
    }
    Ok(common.into_iter().collect())
}

/// Images named by id: one call for all of them (per id only to name an unknown one).
async fn images_by_id(
    api: &dyn Ec2Api,
    site: &AwsSite,
    opts: &Options,
) -> Result<BTreeMap<String, ImageInfo>, ProvisionError> {
    let ids: Vec<String> = site
        .groups
        .iter()
        .filter_map(|g| match &g.image {
            ImageRef::Id(id) => Some(id.clone()),
            ImageRef::Lookup { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_id = BTreeMap::new();
    if ids.is_empty() {
        return Ok(by_id);
    }
    let q = ImageQuery::Ids(ids.clone());
    match retry(opts.retry, || api.describe_images(&q)).await {
        Ok(images) => by_id.extend(images.into_iter().map(|i| (i.id.clone(), i))),
        Err(e) if e.is_not_found() || matches!(e, Ec2Error::Api { .. }) => {
            for id in &ids {
                let q = ImageQuery::Ids(vec![id.clone()]);
                if let Ok(images) = retry(opts.retry, || api.describe_images(&q)).await {
                    by_id.extend(images.into_iter().map(|i| (i.id.clone(), i)));
                }
            }
        }
        Err(e) => return Err(ec2("images")(e)),
    }
    Ok(by_id)
}

/// The group's image (by id, or the newest match of a lookup for the type's
/// architecture); `None` after pushing an error.
async fn image_of(
    api: &dyn Ec2Api,
    g: &InstanceGroup,
    type_archs: Option<&Vec<String>>,
    by_id: &BTreeMap<String, ImageInfo>,
    region: &str,
    errors: &mut Vec<String>,
    opts: &Options,
) -> Result<Option<ImageInfo>, ProvisionError> {
    match &g.image {
        ImageRef::Id(id) => {
            let found = by_id.get(id).cloned();
            if found.is_none() {
                errors.push(format!(
                    "{}: error: image `{id}` does not exist in region {region} (or is not visible to this account)",
                    g.at_image
                ));
            }
            Ok(found)
        }
        ImageRef::Lookup {
            name,
            owner,
            architecture,
        } => {
            let arch = match (architecture, type_archs) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(ta)) => match pick_architecture(ta) {
                    Some(a) => Some(a.to_string()),
                    None => {
                        errors.push(format!(
                            "{}: error: instance type `{}` runs {}; continuum runs k3s on x86_64 or arm64",
                            g.at_type,
                            g.instance_type,
                            ta.join(", ")
                        ));
                        return Ok(None);
                    }
                },
                // Unknown type: already reported.
                (None, None) => return Ok(None),
            };
            let q = ImageQuery::Lookup {
                name: name.clone(),
                owner: owner.clone(),
                architecture: arch.clone(),
            };
            let mut found = retry(opts.retry, || api.describe_images(&q))
                .await
                .map_err(ec2("images"))?;
            // Newest first (ISO 8601 dates sort as text).
            found.sort_by(|a, b| b.creation_date.cmp(&a.creation_date));
            let newest = found.into_iter().next();
            if newest.is_none() {
                errors.push(format!(
                    "{}: error: no image named `{name}` from owner `{owner}`{} in region {region}",
                    g.at_image,
                    arch.map(|a| format!(" for {a}")).unwrap_or_default()
                ));
            }
            Ok(newest)
        }
    }
}

/// What is wrong between a group, its type and its image, if anything.
fn mismatch(
    g: &InstanceGroup,
    type_archs: Option<&Vec<String>>,
    image: &ImageInfo,
) -> Option<String> {
    if !ARCHITECTURES.contains(&image.architecture.as_str()) {
        return Some(format!(
            "{}: error: image `{}` is {}; continuum runs k3s on x86_64 or arm64",
            g.at_image, image.id, image.architecture
        ));
    }
    if let Some(ta) = type_archs
        && !ta.contains(&image.architecture)
    {
        return Some(format!(
            "{}: error: image `{}` is {} but instance type `{}` runs {}",
            g.at_image,
            image.id,
            image.architecture,
            g.instance_type,
            ta.join(", ")
        ));
    }
    if let (Some(gb), Some(snap)) = (g.root_volume_gb, image.root_volume_gb)
        && i64::from(gb) < i64::from(snap)
    {
        return Some(format!(
            "{}: error: root volume of {gb} GiB is smaller than the snapshot of image `{}` ({snap} GiB)",
            g.at_root_volume, image.id
        ));
    }
    None
}

/// A subnet already recorded must lie in a zone that offers every instance type of
/// the site (checked before launching into it). Returns its zone, to record when state
/// did not know it.
pub async fn check_subnet_zone(
    api: &dyn Ec2Api,
    cloud: &CloudState,
    valid: &Validated,
    opts: &Options,
) -> Result<Option<String>, ProvisionError> {
    let Some(sub) = &cloud.subnet else {
        return Ok(None);
    };
    if valid.zones.is_empty() {
        return Ok(None);
    }
    let zone = match &sub.zone {
        Some(z) => z.clone(),
        None => {
            retry(opts.retry, || api.describe_subnet(&sub.id))
                .await
                .map_err(ec2(super::SUBNET))?
                .zone
        }
    };
    if !valid.zones.contains(&zone) {
        return Err(ProvisionError::Invalid(vec![format!(
            "subnet {} is in {zone}, which does not offer every instance type of the site (they are offered together in: {}): choose types offered in {zone}, or remove the environment (`continuum down`) and set `aws.network.availability_zone`",
            sub.id,
            valid.zones.join(", ")
        )]));
    }
    Ok(Some(zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn architecture_prefers_x86_64_and_never_takes_i386() {
        assert_eq!(pick_architecture(&v(&["i386", "x86_64"])), Some("x86_64"));
        assert_eq!(pick_architecture(&v(&["arm64"])), Some("arm64"));
        assert_eq!(pick_architecture(&v(&["arm64", "x86_64"])), Some("x86_64"));
        assert_eq!(pick_architecture(&v(&["i386"])), None);
        assert_eq!(pick_architecture(&v(&["x86_64_mac"])), None);
    }
}
