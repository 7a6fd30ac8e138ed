//! The air-gapped side: push a verified bundle into a private registry, load it into a node's runtime, or
//! merge a verified delta and its bases into the full bundle.

mod feed;
pub mod load;
pub mod merge;
pub mod node;
pub mod platform;
pub mod push;

use std::collections::BTreeMap;

use crate::catalog::{CatalogError, Catalogs, Release};
use crate::verify::Verified;

/// The `images:` section of one product's Helm values, pointing at the pushed names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmValues {
    /// The catalog whose chart takes them, e.g. `huawei-csi`.
    pub catalog: String,
    pub yaml: String,
}

/// The `images:` section of the vendor's Helm values, pointing at the pushed names, for each release the
/// bundle carries whose rows name Helm keys (the catalog's `helm_value`); a release with none (kubernetes)
/// has no values. Images the catalog does not know are left out. A release this ferry does not know is an
/// error: its chart's keys cannot be written.
pub fn helm_values(
    bundle: &Verified,
    pushed: &[push::Pushed],
    catalogs: &Catalogs,
) -> Result<Vec<HelmValues>, CatalogError> {
    let mut values = Vec::new();
    for product in bundle.metadata().products() {
        let release = catalogs.find(&product.spec())?;
        let keyed: Vec<(&str, &str)> = pushed
            .iter()
            .filter_map(|image| {
                let row = release
                    .images
                    .iter()
                    .find(|row| row.reference().to_string() == image.source)?;
                Some((row.helm_value.as_deref()?, image.target.as_str()))
            })
            .collect();
        if keyed.is_empty() {
            continue;
        }
        values.push(HelmValues {
            catalog: release.catalog.clone(),
            yaml: values_yaml(&release, keyed.into_iter()),
        });
    }
    Ok(values)
}

/// `images.KEY` and `images.GROUP.KEY` keys as nested YAML mappings. Every key and value is written
/// double-quoted and escaped (a JSON string is a YAML scalar), so that nothing in them can end a line
/// or start another key.
fn values_yaml<'a>(release: &Release, keyed: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut tree: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (key, target) in keyed {
        let Some(key) = key.strip_prefix("images.") else {
            continue;
        };
        let (group, leaf) = key.split_once('.').unwrap_or(("", key));
        tree.entry(group).or_default().insert(leaf, target);
    }
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut yaml = format!(
        "# Helm values for {} {}: images from the private registry (written by ferry)\nimages:\n",
        release.catalog, release.release
    );
    for (group, leaves) in &tree {
        let indent = if group.is_empty() { "  " } else { "    " };
        if !group.is_empty() {
            yaml.push_str(&format!("  {}:\n", quoted(group)));
        }
        for (leaf, target) in leaves {
            yaml.push_str(&format!("{indent}{}: {}\n", quoted(leaf), quoted(target)));
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_value_is_quoted_so_nothing_can_add_a_key() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find("huawei-csi@4.8.0").unwrap();
        let hostile = "r.io/x:1\"\nsecurityContext:\n  privileged: true\n#";
        let yaml = values_yaml(
            &release,
            [
                ("images.sidecar.attacher", "r.io/csi-attacher:v4.4.0"),
                ("images.huaweiCSIService", hostile),
                ("other.key", "r.io/left-out:1"),
            ]
            .into_iter(),
        );
        assert_eq!(
            yaml,
            "# Helm values for huawei-csi 4.8.0: images from the private registry (written by ferry)\n\
             images:\n  \
               \"huaweiCSIService\": \"r.io/x:1\\\"\\nsecurityContext:\\n  privileged: true\\n#\"\n  \
               \"sidecar\":\n    \
                 \"attacher\": \"r.io/csi-attacher:v4.4.0\"\n"
        );
    }
}
