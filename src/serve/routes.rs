//! The registry API's paths, parsed by hand: repository names contain slashes, and routers match segments.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'p> {
    Base,
    Catalog,
    Tags(&'p str),
    Manifest(&'p str, &'p str),
    Blob(&'p str, &'p str),
    Referrers(&'p str, &'p str),
}

pub fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    let (name, kind, reference) = ["/manifests/", "/blobs/", "/referrers/"]
        .iter()
        .filter_map(|kind| rest.rfind(kind).map(|at| (at, *kind)))
        .max()
        .map(|(at, kind)| (&rest[..at], kind, &rest[at + kind.len()..]))?;
    if name.is_empty() || reference.is_empty() || reference.contains('/') {
        return None;
    }
    Some(match kind {
        "/manifests/" => Route::Manifest(name, reference),
        "/blobs/" => Route::Blob(name, reference),
        _ => Route::Referrers(name, reference),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_slashes_in_names_are_routed() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("/v2/sig-storage/csi-provisioner/manifests/v3.6.0"),
            Some(Route::Manifest("sig-storage/csi-provisioner", "v3.6.0"))
        );
        assert_eq!(
            route("/v2/registry.k8s.io/a/b/tags/list"),
            Some(Route::Tags("registry.k8s.io/a/b"))
        );
        assert_eq!(
            route("/v2/blobs/x/manifests/1"),
            Some(Route::Manifest("blobs/x", "1"))
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob("a", "sha256:00"))
        );
        assert_eq!(
            route("/v2/a/b/referrers/sha256:00"),
            Some(Route::Referrers("a/b", "sha256:00"))
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), None);
        assert_eq!(route("/v3/a/manifests/1"), None);
    }
}
