//! Command-line arguments: what the user typed, parsed and checked by clap, with no I/O.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::k8s::KubeVersion;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Carry container images across an air gap",
    long_about = "ferry resolves the exact images a product release needs for your Kubernetes version, \
                  pulls them from their registries, packs them into one tarball that docker, containerd \
                  and podman load, proves the tarball intact on arrival, and delivers it to a private \
                  registry or a node."
)]
pub struct Cli {
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Load an extra catalog file (TOML, the schema of the built-in ones; see README). A release in it
    /// replaces a built-in release of the same catalog and version. Repeatable.
    #[arg(long = "catalog-file", value_name = "PATH", global = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the catalogs and releases ferry knows.
    Catalogs {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the images a release needs for a Kubernetes version.
    #[command(after_help = "Examples:\n  ferry list huawei-csi@4.8.0 --k8s 1.28\n  ferry list huawei-csi --k8s v1.18.20 --service node --json\n  ferry list huawei-csi@4.8.0 --all-k8s")]
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// CATALOG[@RELEASE], e.g. huawei-csi@4.8.0; without a release, the newest.
    #[arg(value_name = "CATALOG[@RELEASE]")]
    pub release: String,
    #[command(flatten)]
    pub kubernetes: KubeSelection,
    /// Only the images of one service (e.g. controller, node).
    #[arg(long)]
    pub service: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KubeSelection {
    /// The cluster's Kubernetes version: 1.28, v1.28.3, 1.28.3+k3s1, v1.27.9-eks-5e0fdde, ...
    #[arg(long = "k8s", value_name = "VERSION")]
    pub version: Option<KubeVersion>,
    /// Every distinct image set across the Kubernetes versions the release supports.
    #[arg(long = "all-k8s")]
    pub all: bool,
}
