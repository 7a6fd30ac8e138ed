//! The air-gapped side: push a verified bundle into a private registry, load it into a node's runtime, or
//! merge a verified delta and its bases into the full bundle.

pub mod load;
pub mod merge;
pub mod platform;
pub mod push;

use std::collections::BTreeMap;

use crate::catalog::Catalogs;
use crate::verify::Verified;

/// The `images:` section of the vendor's Helm values, pointing at the pushed names, for the bundle's
/// release (keys from the catalog's `helm_value`). Images the catalog does not know are left out.
pub fn helm_values(
    bundle: &Verified,
    pushed: &[push::Pushed],
    catalogs: &Catalogs,
) -> Option<String> {
    let metadata = bundle.metadata();
    let release = catalogs.find(&metadata.release_spec()?).ok()?;
    // Nested keys, e.g. images.sidecar.attacher, written as YAML mappings.
    let mut tree: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in pushed {
        let row = release
            .images
            .iter()
            .find(|row| row.reference().to_string() == image.source);
        let Some(key) = row
            .and_then(|r| r.helm_value.as_deref())
            .and_then(|k| k.strip_prefix("images."))
        else {
            continue;
        };
        let (group, leaf) = key.split_once('.').map_or(("", key), |(g, l)| (g, l));
        tree.entry(group.to_string())
            .or_default()
            .insert(leaf.to_string(), image.target.clone());
    }
    let mut yaml = format!(
        "# Helm values for {} {}: images from the private registry (written by ferry)\nimages:\n",
        release.catalog, release.release
    );
    for (group, leaves) in &tree {
        let indent = if group.is_empty() { "  " } else { "    " };
        if !group.is_empty() {
            yaml.push_str(&format!("  {group}:\n"));
        }
        for (leaf, target) in leaves {
            yaml.push_str(&format!("{indent}{leaf}: \"{target}\"\n"));
        }
    }
    Some(yaml)
}
