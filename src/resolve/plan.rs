//! From what the user asked for to the bundles to write: one plan per distinct image set of a release
//! (plus any images named directly), and the union that one fetch gets for several bundles.

use super::{image_sets, resolve, versions_for, ResolveError};
use crate::catalog::{Catalogs, ImageSource, Release};
use crate::image::Platform;
use crate::k8s::{KubeRange, KubeVersion};
use crate::reference::Reference;

/// An image to carry, as the plan names it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub reference: Reference,
    pub source: ImageSource,
}

/// The images of one bundle: one release's image set for a span of Kubernetes versions, plus any images
/// named directly.
#[derive(Debug, Clone)]
pub struct Plan {
    pub release: Option<Release>,
    /// The Kubernetes versions this image set serves, when a release was named.
    pub span: Option<KubeRange>,
    pub service: Option<String>,
    pub images: Vec<Wanted>,
}

impl Plan {
    /// Says what is inside: `huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar`.
    /// Several platforms are all named: `…-linux-amd64-linux-arm64.tar`.
    /// The catalog's grammar keeps separators out of its names; this is the check before a path.
    pub fn file_name(&self, platforms: &[Platform]) -> Result<String, ResolveError> {
        let name = self.unchecked_file_name(platforms);
        match name.contains('/') || name.chars().any(char::is_control) {
            true => Err(ResolveError::FileName(name)),
            false => Ok(name),
        }
    }

    fn unchecked_file_name(&self, platforms: &[Platform]) -> String {
        let platform = platforms
            .iter()
            .map(|p| p.to_string().replace('/', "-"))
            .collect::<Vec<_>>()
            .join("-");
        let Some(release) = &self.release else {
            return format!("images-{platform}.tar");
        };
        let span = match self.span {
            Some(span) if span.max.is_none() => format!("-k8s{}-up", span.min),
            Some(span) => format!("-k8s{span}"),
            None => String::new(),
        };
        let service = self
            .service
            .as_ref()
            .map(|s| format!("-{s}"))
            .unwrap_or_default();
        format!(
            "{}-{}{span}{service}-{platform}.tar",
            release.catalog, release.release
        )
    }
}

/// What the user asked for: a release (for some Kubernetes versions) and/or images by reference.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub release: Option<&'a str>,
    pub versions: &'a [KubeVersion],
    pub all_versions: bool,
    pub service: Option<&'a str>,
    pub extra: &'a [Reference],
}

/// One plan per distinct image set the selection touches, lowest Kubernetes versions first. Two requested
/// versions served by the same set (1.21 and 1.28 for CSI 4.8.0) give one plan.
pub fn plans(catalogs: &Catalogs, selection: &Selection) -> Result<Vec<Plan>, ResolveError> {
    let extra = || {
        selection.extra.iter().map(|r| Wanted {
            reference: r.clone(),
            source: ImageSource::Registry,
        })
    };
    let Some(spec) = selection.release else {
        if selection.extra.is_empty() {
            return Err(ResolveError::NothingSelected);
        }
        return Ok(vec![Plan {
            release: None,
            span: None,
            service: None,
            images: extra().collect(),
        }]);
    };
    let release = catalogs.find(spec)?;
    let versions = versions_for(&release, selection.versions, selection.all_versions)?;
    let service = selection
        .service
        .map(|name| release.service(name))
        .transpose()?;
    for &version in &versions {
        resolve(&release, version, service)?; // an unsupported version is an error, never an empty set
    }
    let mut plans = Vec::new();
    for set in image_sets(&release, service) {
        if !selection.all_versions && !versions.iter().any(|v| set.span.contains(*v)) {
            continue;
        }
        let mut images: Vec<Wanted> = set
            .images
            .iter()
            .map(|row| Wanted {
                reference: row.reference(),
                source: row.source,
            })
            .collect();
        add_once(&mut images, extra());
        plans.push(Plan {
            release: Some(release.clone().into_owned()),
            span: Some(set.span),
            service: service.map(|s| s.short.clone()),
            images,
        });
    }
    Ok(plans)
}

/// Every image of several plans, each once: what one fetch gets for several bundles.
pub fn union(plans: &[Plan]) -> Plan {
    let mut images: Vec<Wanted> = Vec::new();
    add_once(
        &mut images,
        plans.iter().flat_map(|p| p.images.iter().cloned()),
    );
    Plan {
        release: plans.first().and_then(|p| p.release.clone()),
        span: None,
        service: None,
        images,
    }
}

/// Appends each image not already listed, keeping the first listing's order.
fn add_once(images: &mut Vec<Wanted>, more: impl IntoIterator<Item = Wanted>) {
    for wanted in more {
        if !images.iter().any(|w| w.reference == wanted.reference) {
            images.push(wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_images_join_the_plan_once() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let extra: Vec<Reference> = vec![
            "registry.k8s.io/sig-storage/csi-resizer:v1.9.0"
                .parse()
                .unwrap(),
            "busybox:1.36".parse().unwrap(),
        ];
        let versions = ["1.28".parse().unwrap()];
        let selection = Selection {
            release: Some("huawei-csi@4.8.0"),
            versions: &versions,
            service: Some("node"),
            extra: &extra,
            ..Default::default()
        };
        let plan = &plans(&catalogs, &selection).unwrap()[0];
        let names: Vec<String> = plan
            .images
            .iter()
            .map(|w| w.reference.to_string())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names.last().unwrap(), "docker.io/library/busybox:1.36");
    }

    #[test]
    fn versions_served_by_one_set_make_one_plan() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let versions: Vec<KubeVersion> = ["1.21", "1.28", "1.18"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let selection = Selection {
            release: Some("huawei-csi@4.8.0"),
            versions: &versions,
            ..Default::default()
        };
        let spans: Vec<String> = plans(&catalogs, &selection)
            .unwrap()
            .iter()
            .map(|p| p.span.unwrap().to_string())
            .collect();
        assert_eq!(spans, ["1.17-1.19", "1.20+"]);
        let all = plans(
            &catalogs,
            &Selection {
                release: Some("huawei-csi@4.8.0"),
                all_versions: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            union(&all).images.len(),
            16,
            "every row of the 4.8.0 table once"
        );
    }

    #[test]
    fn file_names_say_what_is_inside() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let all = plans(
            &catalogs,
            &Selection {
                release: Some("huawei-csi@4.8.0"),
                all_versions: true,
                ..Default::default()
            },
        )
        .unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|p| p.file_name(&[Platform::linux_amd64()]).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "huawei-csi-4.8.0-k8s1.16-linux-amd64.tar",
                "huawei-csi-4.8.0-k8s1.17-1.19-linux-amd64.tar",
                "huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar"
            ]
        );
        let extra = ["busybox:1".parse().unwrap()];
        let loose = plans(
            &catalogs,
            &Selection {
                extra: &extra,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            loose[0]
                .file_name(&["linux/arm/v7".parse().unwrap()])
                .unwrap(),
            "images-linux-arm-v7.tar"
        );
    }

    #[test]
    fn a_file_name_that_would_be_a_path_is_refused() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let mut release = catalogs.find("huawei-csi@4.8.0").unwrap().into_owned();
        release.release = "1/../../escape".into();
        let plan = Plan {
            release: Some(release),
            span: None,
            service: None,
            images: Vec::new(),
        };
        assert_eq!(
            plan.file_name(&[Platform::linux_amd64()])
                .unwrap_err()
                .to_string(),
            "the bundle's file name 'huawei-csi-1/../../escape-linux-amd64.tar' would not be a file \
             name: name the output with -o FILE"
        );
    }
}
