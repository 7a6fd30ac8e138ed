//! Command-line arguments: what the user typed, parsed and checked by clap, with no I/O.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::catalog::Catalogs;
use crate::deliver::load::Runtime;
use crate::image::Platform;
use crate::k8s::KubeVersion;
use crate::reference::Reference;
use crate::registry::Mirror;

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
    /// List the catalogs and releases ferry knows (the kubernetes catalog one line per minor).
    Catalogs {
        /// Every release, the kubernetes catalog's hundreds of patch releases too.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table (every release).
        #[arg(long)]
        json: bool,
    },
    /// List the images a release needs for a Kubernetes version, and those that files or a site name.
    #[command(
        after_help = "Examples:\n  ferry list huawei-csi@4.8.0 --k8s 1.28\n  ferry list huawei-csi --k8s v1.18.20 --service node --json\n  ferry list huawei-csi@4.8.0 --all-k8s\n  ferry list kubernetes@1.28.3\n  ferry list kubernetes@1.28 --service node\n  ferry list kubernetes@1.28.3 huawei-csi@4.8.0\n  kubeadm config images list > k8s.txt; ferry list --images-from k8s.txt\n  helm template cni ./cni | ferry list --images-from-manifests -\n  ferry list --site site.toml\n\nA kubernetes release is the Kubernetes version itself: it needs no --k8s (one that disagrees is refused).\nkubernetes@1.28 is the newest 1.28 release the catalog knows; a newer patch (kubernetes@1.28.99) is\nserved from that row with a warning naming what it assumed.\n\nImages named in files are shown with where each was named: the list file and line, or the\nobject and container (Deployment kube-system/coredns container coredns) and its file and line."
    )]
    List(ListArgs),
    /// What upgrading from one release to another adds, removes and keeps, image by image.
    #[command(
        after_help = "Examples:\n  ferry diff huawei-csi@4.5.0 huawei-csi@4.8.0 --k8s 1.28\n  ferry diff huawei-csi@3.2.1 huawei-csi --k8s 1.25 --service node --json\n  ferry diff kubernetes@1.28.3+huawei-csi@4.5.0 kubernetes@1.29.0+huawei-csi@4.8.0\n  ferry diff --site plant7-2024.toml --site plant7-2025.toml\n\nSeveral products on a side are joined by +; --site twice compares two site files (products, lists,\nmanifests and extra images). Each side is resolved on --k8s, else on its own Kubernetes version (a\nkubernetes release among its products, or the site file's), else on the other side's. Images are\ncompared by fully qualified reference, whichever product lists them.\n\nWith a cache that has pulled both releases, each image's size and the bytes to carry (blobs of the\nadded images that the kept and removed ones do not share) are shown too."
    )]
    Diff(DiffArgs),
    /// Fetch a release's images (and any --image) into the local cache, verified and resumable.
    #[command(
        after_help = "Examples:\n  ferry pull huawei-csi@4.8.0 --k8s 1.28 --vendor-dir ./eSDK_Huawei_Storage_Kubernetes_CSI_Plugin/image\n  ferry pull huawei-csi@4.8.0 --k8s 1.28 --skip-vendor --mirror registry.k8s.io=127.0.0.1:5000\n  ferry pull kubernetes@1.28.3 huawei-csi@4.8.0 --vendor-dir ./package/image\n  ferry pull --site site.toml\n  ferry pull --image quay.io/k8scsi/csi-attacher:v1.2.1 --platform linux/arm64"
    )]
    Pull(PullArgs),
    /// Pull, then write one tarball (per distinct image set) that docker, containerd and podman load.
    #[command(
        after_help = "Examples:\n  ferry bundle huawei-csi@4.8.0 --k8s 1.28 --vendor-dir ./package/image\n  ferry bundle kubernetes@1.28.3 huawei-csi@4.8.0 --vendor-dir ./package/image\n  ferry bundle --site site.toml --sign ~/.ssh/ferry_ed25519 --lock site.lock\n  ferry bundle huawei-csi@4.8.0 --all-k8s --skip-vendor -o bundles/\n  ferry bundle --image quay.io/a/b:1 --image registry.k8s.io/c/d:2 -o x.tar --split 4G\n  ferry bundle --images-from k8s.txt --images-from-manifests rendered/ -o site.tar\n\nSeveral products make one bundle, each shared blob once; a kubernetes release among them gives the\nothers their Kubernetes version (a --k8s that disagrees is refused). The default name says what is\ninside: kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-linux-amd64.tar; +N-images when images beyond the\nreleases' tables are added; -incomplete.tar when --skip-vendor leaves the vendor's images out.\n\nThe bundle is a plain tar (no outer compression: containerd and podman refuse a gzipped one).\nBeside it: PATH.sha256 for `sha256sum -c`. With --split: PATH.part-000, -001, ..., PATH.parts.sha256\nfor the parts, and PATH.sha256 for the whole after `cat PATH.part-* > PATH`.\nSOURCE_DATE_EPOCH sets the entries' mtime (default 0): the same inputs give the same bytes.\nCtrl-C, SIGTERM or SIGHUP stops cleanly (exit 130, 143, 129); nothing half-written is left."
    )]
    Bundle(BundleArgs),
    /// Prove a bundle complete and intact: every byte, every reference, in one pass. Exit 0 intact, 1 not.
    #[command(
        after_help = "PATH may be a bundle, a gzipped bundle, or the first part (x.tar.part-000) of a split one.\nA PATH.sha256 (and PATH.parts.sha256) beside it are checked too; without them, the content still is."
    )]
    Verify(VerifyArgs),
    /// Show what a bundle holds: images, sizes, shared layers, and its metadata.
    Inspect(InspectArgs),
    /// Rebuild the full bundle from a delta and its bases, byte for byte the one `ferry bundle` writes.
    #[command(
        after_help = "Examples:\n  ferry merge huawei-csi-4.5.0-k8s1.20-up-linux-amd64.tar huawei-csi-4.8.0-k8s1.20-up-linux-amd64-delta-from-huawei-csi-4.5.0.tar -o bundles/\n  ferry merge base.tar delta1.tar delta2.tar -o new.tar --trust allowed_signers\n\nThe last file is the delta; the others are its bases, in any order. Each blob is copied once and\nthe output hashed as it is written: it is put in place only if its sha256 is the one the delta\nnames, which proves every byte taken from the delta and the bases; --trust (or FERRY_TRUST) checks\nthe signature of that sha256 the delta carries. When it is not (a base changed, a file that is no\nbase), or with --lock, the delta and its bases are verified byte for byte first (each base must be\nthe file the delta names by sha256), and what is wrong is named. The bundle comes with\nPATH.sha256, and, when the delta was signed and the output keeps the full bundle's name, PATH.sig:\n`sha256sum -c` and `ferry verify --trust` check it like a bundle built directly."
    )]
    Merge(MergeArgs),
    /// Rebuild a bundle damaged in transit from the recovery data beside it (`bundle --recovery`), then verify it.
    #[command(
        after_help = "Examples:\n  ferry repair csi.tar\n  ferry repair csi.tar.part-000 --trust allowed_signers\n\nThe damaged blocks are found from PATH.par2 and PATH.vol*.par2 (par2cmdline's files work too), rebuilt\ninto temporary files beside the bundle, and put in place only if the result matches PATH.sha256 (and\nPATH.parts.sha256); with --trust, PATH.sha256 must carry a signature FILE allows. A failure or Ctrl-C\nleaves every file as it was. Damage beyond the recovery data is refused, saying how many more recovery\nblocks it would need and which images are intact."
    )]
    Repair(RepairArgs),
    /// Verify a bundle, then push every image into a private registry with its upstream digest.
    #[command(
        after_help = "Names keep their upstream path under the target:\n  registry.k8s.io/sig-storage/csi-provisioner:v3.6.0 -> HOST/PREFIX/sig-storage/csi-provisioner:v3.6.0\n  docker.io/library/huawei-csi:4.8.0              -> HOST/PREFIX/huawei-csi:4.8.0\nCredentials come from DOCKER_CONFIG/config.json (auths, credHelpers, credsStore) or REGISTRY_AUTH_FILE."
    )]
    Push(PushArgs),
    /// Verify a bundle, then load it into this node's container runtime (containerd first, as kubelet uses it).
    Load(LoadArgs),
    /// Verify bundles, then serve them as a read-only registry that nodes pull from (or print the nodes' configuration).
    #[command(
        after_help = "Examples:\n  ferry serve csi.tar --listen 10.0.0.5:5000\n  ferry serve csi.tar --listen 10.0.0.5:5000 --print-config containerd > nodes.sh\n  ferry serve a.tar b.tar.part-000 --listen 0.0.0.0:5443 --tls-cert reg.pem --tls-key reg.key --htpasswd htpasswd\n\nNames are those ferry push gives, without a host: 10.0.0.5:5000/sig-storage/csi-provisioner:v3.6.0, 10.0.0.5:5000/huawei-csi:4.8.0. As a mirror, the upstream registry comes with containerd's ns= parameter, or as the first path component (10.0.0.5:5000/registry.k8s.io/sig-storage/csi-provisioner:v3.6.0).\n\nWrites are refused. Ctrl-C or SIGTERM stops it; transfers under way get 10 s to finish."
    )]
    Serve(ServeArgs),
    /// Print the completion script for a shell, generated from the same definitions as --help.
    #[command(
        after_help = "Where each shell looks for it:\n  ferry completions bash > /etc/bash_completion.d/ferry   (or ~/.local/share/bash-completion/completions/ferry)\n  ferry completions zsh > /usr/local/share/zsh/site-functions/_ferry   (a directory on $fpath)\n  ferry completions fish > ~/.config/fish/completions/ferry.fish\n  ferry completions powershell >> $PROFILE"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages of ferry and of each subcommand (ferry.1, ferry-verify.1, ...) into DIR.
    #[command(
        after_help = "Example:\n  ferry manpages /usr/local/share/man/man1 && man ferry-verify\n\nDIR is created when missing; a page already there is replaced."
    )]
    Manpages {
        /// The directory to write the pages into.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Parses the command line, with the long `--version` that [`command`] gives. That text lists the newest
/// release of each catalog, which takes loading the catalogs: it is made only when `--version` is asked.
pub fn parse() -> Cli {
    let matches = match Cli::command().try_get_matches() {
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayVersion => {
            command().get_matches()
        }
        parsed => parsed.unwrap_or_else(|error| error.exit()),
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// ferry's command line as --help, `ferry completions` and `ferry manpages` show it: one definition.
pub fn command() -> clap::Command {
    Cli::command().long_version(long_version())
}

/// What `ferry --version` says besides the version: the commit it was built from (build.rs), and the
/// newest release of each catalog compiled in, so that an operator knows which tables a binary carries.
fn long_version() -> String {
    let newest = match Catalogs::load(&[]).and_then(|catalogs| {
        let mut newest: Vec<String> = Vec::new();
        let mut catalog = None;
        // Releases come sorted by catalog, newest first: the first of each catalog is its newest. Their
        // names are known without parsing them.
        for release in catalogs.listed()? {
            if catalog != Some(release.catalog()) {
                catalog = Some(release.catalog());
                newest.push(release.id());
            }
        }
        Ok(newest)
    }) {
        Ok(newest) => newest.join(", "),
        Err(error) => format!("cannot be read: {error}"),
    };
    format!(
        "{} ({})\nnewest catalog releases: {newest}",
        env!("CARGO_PKG_VERSION"),
        env!("FERRY_BUILD_COMMIT")
    )
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// CATALOG[@RELEASE], e.g. huawei-csi@4.8.0; without a release, the newest. Several are listed one
    /// after the other, e.g. kubernetes@1.28.3 huawei-csi@4.8.0 (the kubernetes release gives the others
    /// their version). May be left out with --images-from, --images-from-manifests or --site.
    #[arg(
        value_name = "CATALOG[@RELEASE]",
        required_unless_present_any = ["lists", "manifests", "site"]
    )]
    pub releases: Vec<String>,
    #[command(flatten)]
    pub kubernetes: KubeSelection,
    /// Only the images of one service (e.g. controller, node), of each release named.
    #[arg(long, requires = "releases")]
    pub service: Option<String>,
    #[command(flatten)]
    pub files: ImageFiles,
    /// Everything a site file names: each product's images for its Kubernetes versions, then the images
    /// of its lists, manifests and references, with where each was named.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["releases", "version", "all", "lists", "manifests"])]
    pub site: Option<PathBuf>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Needed for a product release; a kubernetes release says its version itself.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct KubeSelection {
    /// The cluster's Kubernetes version: 1.28, v1.28.3, 1.28.3+k3s1, v1.27.9-eks-5e0fdde, ...
    #[arg(long = "k8s", value_name = "VERSION", requires = "releases")]
    pub version: Option<KubeVersion>,
    /// Every distinct image set across the Kubernetes versions the release supports (one release only).
    #[arg(long = "all-k8s", requires = "releases")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The release running now, CATALOG@RELEASE; several products joined by +
    /// (kubernetes@1.28.3+huawei-csi@4.5.0).
    #[arg(
        value_name = "FROM",
        required_unless_present = "sites",
        requires = "to"
    )]
    pub from: Option<String>,
    /// The release to upgrade to, CATALOG@RELEASE (or CATALOG for its newest); several joined by +.
    #[arg(value_name = "TO", conflicts_with = "sites")]
    pub to: Option<String>,
    /// The site file running now, then the one to upgrade to (give it twice, instead of FROM and TO):
    /// their products, lists, manifests and extra images compared.
    #[arg(long = "site", value_name = "FILE", num_args = 1)]
    pub sites: Vec<PathBuf>,
    /// The cluster's Kubernetes version (not needed when a side is a kubernetes release: each of those
    /// is compared on its own version).
    #[arg(long = "k8s", value_name = "VERSION")]
    pub version: Option<KubeVersion>,
    /// Only the images of one service (e.g. controller, node).
    #[arg(long)]
    pub service: Option<String>,
    /// The platform whose images' sizes to read from the cache.
    #[arg(long, default_value = "linux/amd64", value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Platform,
    /// The blob cache to size images from [default: $XDG_CACHE_HOME/ferry, or ~/.cache/ferry].
    #[arg(long, value_name = "DIR", env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub images: ImageSelection,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// Which images: a catalog release for a Kubernetes version, plus any images named directly.
#[derive(Debug, Args)]
pub struct ImageSelection {
    /// CATALOG[@RELEASE], e.g. huawei-csi@4.8.0. Several products go into one bundle, each shared blob
    /// once: kubernetes@1.28.3 huawei-csi@4.8.0 (the kubernetes release gives the others their version).
    /// May be left out when --image, --images-from, --images-from-manifests or --site names every image.
    /// With --all-releases: one CATALOG, or CATALOG@FROM..TO.
    #[arg(value_name = "CATALOG[@RELEASE]")]
    pub releases: Vec<String>,
    /// The cluster's Kubernetes version; repeat it for clusters of several versions. Not needed beside a
    /// kubernetes@VERSION release, which it must then agree with.
    #[arg(long = "k8s", value_name = "VERSION")]
    pub versions: Vec<KubeVersion>,
    /// Every distinct image set across the Kubernetes versions the release supports (one release only).
    #[arg(long = "all-k8s", conflicts_with = "versions")]
    pub all_versions: bool,
    /// Every release of the catalog (CATALOG), or a range (CATALOG@3.2.0..3.2.3, ends included), that
    /// supports the --k8s versions: one bundle per release and image set, each shared blob fetched once.
    /// Releases that do not support a requested version are skipped with a note. One catalog only.
    #[arg(long = "all-releases")]
    pub all_releases: bool,
    /// Only the images of one service (e.g. controller, node), of each release named.
    #[arg(long)]
    pub service: Option<String>,
    /// Add an image by reference (repeatable); works without a catalog release.
    #[arg(long = "image", value_name = "REF")]
    pub extra: Vec<Reference>,
    #[command(flatten)]
    pub files: ImageFiles,
    /// Everything a site file says: its products, Kubernetes versions, platforms, lists, manifests, extra
    /// images, mirrors and the vendor's images. Flags that say what to carry are refused beside it (the
    /// reviewed file decides that); --mirror, --vendor-dir, --insecure-registry and --ca-cert add to it.
    #[arg(long, value_name = "FILE")]
    pub site: Option<PathBuf>,
}

/// Images named in files: lists, and rendered Kubernetes manifests.
#[derive(Debug, Args)]
pub struct ImageFiles {
    /// Add the images FILE lists, one reference per line: blank lines and # comments are skipped, and the
    /// output of `kubeadm config images list` or of `helm template ... | grep image:` is taken as it is.
    /// A bad line is refused with its number. - reads standard input (repeatable).
    #[arg(long = "images-from", value_name = "FILE")]
    pub lists: Vec<PathBuf>,
    /// Add every container, init container and ephemeral container image of the Pods, Deployments,
    /// DaemonSets, StatefulSets, ReplicaSets, Jobs, CronJobs and ReplicationControllers in Kubernetes YAML
    /// or JSON (helm template, kustomize build, kubectl get -o yaml; List kinds too): a file, a folder
    /// (its *.yaml, *.yml and *.json, at any depth), or - for standard input. Other kinds are passed over
    /// and counted (repeatable).
    #[arg(long = "images-from-manifests", value_name = "PATH")]
    pub manifests: Vec<PathBuf>,
}

impl ImageFiles {
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty() && self.manifests.is_empty()
    }
}

/// One `--platform` value: a platform, or `all` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformArg {
    All,
    One(Platform),
}

impl std::str::FromStr for PlatformArg {
    type Err = crate::image::PlatformError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "all" => Ok(PlatformArg::All),
            _ => text.parse().map(PlatformArg::One),
        }
    }
}

/// Where and how to fetch: platform, cache, registries, vendor images.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The nodes' platforms, picked from multi-platform images: linux/amd64, linux/arm64, linux/arm/v7, ...
    /// A comma list (or the flag repeated) carries several in one bundle, for mixed clusters; every image
    /// must have each of them. `all` carries each image's whole upstream index as it is (attestations
    /// too), so that pins to the index digest resolve after push and from serve.
    /// [default: linux/amd64]
    #[arg(
        long = "platform",
        value_name = "OS/ARCH[/VARIANT],...|all",
        value_delimiter = ','
    )]
    pub platforms: Vec<PlatformArg>,
    /// With several --platform: carry this image (as the catalog or --image names it) with the platforms
    /// it has, even if it lacks some of those asked for (repeatable).
    #[arg(long = "allow-single-platform", value_name = "REF")]
    pub allow_single_platform: Vec<Reference>,
    /// Parallel downloads.
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// The blob cache [default: $XDG_CACHE_HOME/ferry, or ~/.cache/ferry].
    #[arg(long, value_name = "DIR", env = "FERRY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Fetch FROM's images from HOST instead, under PREFIX; images keep their upstream names (repeatable).
    #[arg(long = "mirror", value_name = "FROM=HOST[:PORT][/PREFIX]")]
    pub mirrors: Vec<Mirror>,
    /// Use plain HTTP for this registry host (loopback hosts fall back to it on their own) (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Trust this CA certificate (PEM) for registries, besides the system's and /etc/{docker,containers}/certs.d/HOST/*.crt (repeatable).
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub ca_certs: Vec<PathBuf>,
    /// Directory with the vendor's image tarballs from its release package, at any depth: docker-save or
    /// OCI archives (podman save --format oci-archive, skopeo oci-archive:), .tar or .tar.gz. Repeat it
    /// for the vendor's package of each architecture: each tarball's platform is read from its images'
    /// configs, never from its name.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["vendor_registry", "skip_vendor"])]
    pub vendor_dir: Vec<PathBuf>,
    /// Registry (and path prefix) where an operator pushed the vendor's images, e.g. 10.0.0.5:5000/huawei.
    #[arg(long, value_name = "HOST/PREFIX", conflicts_with = "skip_vendor")]
    pub vendor_registry: Option<String>,
    /// Leave out the images only the vendor's package provides.
    #[arg(long)]
    pub skip_vendor: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    #[command(flatten)]
    pub images: ImageSelection,
    /// The bundle file, or a directory for the default name(s), which say what is inside
    /// (e.g. huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar) [default: the current directory]. A path
    /// ending in / is a directory, created when missing. Checked before anything is fetched; an existing
    /// device, FIFO or symlink is never replaced.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Cut the bundle into numbered parts of at most SIZE: 4G means 4 GiB - 1 byte, the most a FAT32 stick
    /// holds in one file; other sizes (700M, 512K, 8G) are taken as given. At most 1000 parts.
    #[arg(long, value_name = "SIZE", value_parser = crate::tarball::parse_size)]
    pub split: Option<u64>,
    /// Sign the bundle with this OpenSSH private key (ed25519 or ecdsa): writes PATH.sig, the SSH
    /// signature of `ssh-keygen -Y sign -n ferry` over PATH.sha256. An encrypted key's passphrase comes from
    /// FERRY_SIGN_PASSPHRASE, or is asked for on the terminal.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// Write PAR2 recovery data beside the bundle, PERCENT of its size (e.g. 5%): PATH.par2 and
    /// PATH.volFIRST+COUNT.par2, which `ferry repair` (or par2cmdline) uses to rebuild a bundle damaged
    /// in transit, byte-exact. PATH.sha256 (and its signature) cover them. Split bundles: a lost part is
    /// rebuilt when PERCENT is at least 100 / the number of parts.
    #[arg(long, value_name = "PERCENT")]
    pub recovery: Option<crate::recovery::Redundancy>,
    /// Pin every image's digest in FILE (TOML, sorted, for review). Absent: it is written. Present: the
    /// build must resolve the same digests, or it fails naming each image that moved and writes nothing.
    /// One lock pins one bundle: not with --all-k8s.
    #[arg(long, value_name = "FILE", conflicts_with = "all_versions")]
    pub lock: Option<PathBuf>,
    /// Rewrite the --lock file with the digests resolved now, on purpose.
    #[arg(long, requires = "lock")]
    pub update_lock: bool,
    /// Write a delta: only the blobs BASE lacks (every manifest and config still travels). BASE is a
    /// bundle or delta the far side holds, or what `ferry inspect --json` printed of it. Of a bundle with
    /// its .sha256 beside it only the headers and documents are read (a delta takes no byte from its
    /// base); one without, or a delta, is verified whole first. Repeat it for everything the site holds;
    /// the default name says `-delta-from-` and the bases' releases.
    #[arg(long, value_name = "BASE")]
    pub since: Vec<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
}

/// What a delta is read with: the files that supply the blobs it left out.
#[derive(Debug, Args)]
pub struct BaseArgs {
    /// A base of a delta (repeatable, any order): it must be a file the delta names by sha256, and
    /// supplies the blobs the delta left out.
    #[arg(long = "base", value_name = "BASE")]
    pub bases: Vec<PathBuf>,
}

/// What a bundle must prove besides being intact: who signed it, and which digests it may hold.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Require PATH.sig: a valid SSH signature over PATH.sha256 (which must match the bundle), made by a
    /// key FILE (OpenSSH allowed_signers format) allows for namespace "ferry". FERRY_TRUST sets it for
    /// every run on a machine.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Require every image to have the digest FILE (written by `ferry bundle --lock`) pins, and every
    /// image it pins to be in the bundle. Vendor images' layers are then decompressed and checked (--deep).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle (or its first part).
    pub path: PathBuf,
    /// Also check that the bundle holds every image its release needs on this Kubernetes version.
    #[arg(long, value_name = "VERSION")]
    pub k8s: Option<KubeVersion>,
    /// Also decompress every layer and check it against its config's diff_ids.
    #[arg(long)]
    pub deep: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bases: BaseArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The bundle (or its first part, even when that part is lost).
    pub path: PathBuf,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle (or its first part).
    pub path: PathBuf,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The bases, then the delta last.
    #[arg(required = true, num_args = 2.., value_name = "BASE... DELTA")]
    pub paths: Vec<PathBuf>,
    /// The full bundle to write, or a directory for its own name (ending in /: created when missing)
    /// [default: its own name, in the current directory].
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Cut the bundle into numbered parts of at most SIZE, as `ferry bundle --split` does.
    #[arg(long, value_name = "SIZE", value_parser = crate::tarball::parse_size)]
    pub split: Option<u64>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The bundle (or its first part).
    pub path: PathBuf,
    /// The private registry, with an optional path prefix: HOST[:PORT][/PREFIX]. HOST has a '.' or a ':' or
    /// is localhost, as in image names (myregistry/csi would mean Docker Hub).
    #[arg(long, value_name = "HOST[:PORT][/PREFIX]")]
    pub to: crate::registry::Target,
    /// Trust this CA certificate (PEM), besides the system's and /etc/{docker,containers}/certs.d/HOST/*.crt (repeatable).
    #[arg(long = "ca-cert", value_name = "PEM")]
    pub ca_certs: Vec<PathBuf>,
    /// Use plain HTTP for this host (repeatable; loopback hosts fall back to it on their own).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure: Vec<String>,
    /// Images pushed in parallel.
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Print where each image would go, and push nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// From a damaged bundle beyond repair, push the images that verified intact and leave the damaged
    /// ones out (named on stderr). Every pushed blob is still checked; an image with one platform damaged
    /// is left out whole. --trust and --lock refuse it: the signature and the lock cover the whole bundle.
    #[arg(long)]
    pub intact_only: bool,
    /// Write the images: section of the vendor's Helm chart values, pointing at the pushed images.
    #[arg(long, value_name = "FILE")]
    pub helm_values: Option<PathBuf>,
    /// Print the mapping as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub bases: BaseArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The bundle (or its first part).
    pub path: PathBuf,
    /// The runtime to load into [default: the first found: containerd (at its usual sockets, or where
    /// kubelet's or containerd's files say), then docker, then podman; never another where containerd is
    /// in use but not found]
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
    /// containerd namespace (kubelet's is k8s.io).
    #[arg(long, default_value = "k8s.io")]
    pub namespace: String,
    /// The runtime's socket: containerd's, dockerd's, or a podman service's (`podman system service`).
    #[arg(long, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
    /// The platform to load from a bundle of several [default: this machine's, e.g. linux/arm64 on Kunpeng].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
    /// From a damaged bundle beyond repair, load the images that verified intact and leave the damaged
    /// ones out (named on stderr). Every fed blob is still checked; an image with one platform damaged
    /// is left out whole. --trust and --lock refuse it: the signature and the lock cover the whole bundle.
    #[arg(long)]
    pub intact_only: bool,
    #[command(flatten)]
    pub bases: BaseArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The bundles (or first parts of split ones), verified before anything is served.
    #[arg(required = true, value_name = "BUNDLE")]
    pub paths: Vec<PathBuf>,
    /// Where to listen: 10.0.0.5:5000, 0.0.0.0:5000 (every interface), 127.0.0.1:0 (a free port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); without it, plain HTTP, which nodes must be told to accept.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask for basic auth, checked against this htpasswd file of bcrypt entries (htpasswd -B).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// Blob transfers at once (a quarter of them per client address); more wait their turn.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_transfers: u16,
    /// debug logs one line per request; info logs a summary every minute and at the end.
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "info")]
    pub log_level: LogLevel,
    /// Print the configuration that sends a node's pulls of the bundles' images here, and exit.
    #[arg(long, value_enum, value_name = "RUNTIME")]
    pub print_config: Option<NodeRuntime>,
    /// HOST[:PORT] nodes reach this server at, for --print-config [default: the --listen address].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub advertise: Option<crate::serve::node_config::Advertised>,
    #[command(flatten)]
    pub bases: BaseArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// `--runtime`: the container runtimes ferry loads into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Containerd,
    Docker,
    Podman,
}

impl From<RuntimeArg> for Runtime {
    fn from(runtime: RuntimeArg) -> Runtime {
        match runtime {
            RuntimeArg::Containerd => Runtime::Containerd,
            RuntimeArg::Docker => Runtime::Docker,
            RuntimeArg::Podman => Runtime::Podman,
        }
    }
}

/// The runtimes `serve --print-config` writes configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRuntime {
    Containerd,
    Docker,
    #[value(name = "cri-o")]
    CriO,
}

impl From<NodeRuntime> for crate::serve::node_config::Runtime {
    fn from(runtime: NodeRuntime) -> Self {
        match runtime {
            NodeRuntime::Containerd => Self::Containerd,
            NodeRuntime::Docker => Self::Docker,
            NodeRuntime::CriO => Self::CriO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}
