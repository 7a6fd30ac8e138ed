//! Load a verified bundle into the node's container runtime by running the runtime's own tool, feeding it
//! the tar on stdin (parts joined, gzip undone), so split and compressed bundles load as they are.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::read::MultiGzDecoder;

use super::merge;
use super::platform::{feed_one_platform, one_platform_size};
use crate::image::Platform;
use crate::layer_codec::Codec;
use crate::progress::{Action, Counted, Id, Reporter, Task};
use crate::tarball::read::Source;
use crate::verify::{Verified, VerifiedImage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Docker,
    Podman,
}

/// Where runtimes listen by default; containerd first, because it is what kubelet uses.
const CONTAINERD_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
];
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no container runtime found: no containerd socket ({}), no {DOCKER_SOCKET}, no podman; name one with --runtime and --address", CONTAINERD_SOCKETS.join(", "))]
    NoRuntime,
    #[error("cannot run {tool}; is it installed? Run by hand: {command}")]
    Spawn {
        tool: String,
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed ({status}): {output}\nRun by hand to retry: {command}")]
    Failed {
        tool: String,
        status: String,
        output: String,
        command: String,
    },
    #[error("cannot read the bundle while loading it")]
    Read(#[source] io::Error),
    #[error("{bundle}: {why}")]
    Platform { bundle: String, why: String },
    #[error(
        "{} is gzipped; loading one platform of it into docker or podman reads blobs in place: gunzip it first",
        .0.display()
    )]
    Compressed(PathBuf),
    #[error(
        "docker load failed, and the bundle has zstd-compressed layers, which Docker Engine before 23.0 \
         cannot load: use --runtime containerd or --runtime podman, or a newer Docker"
    )]
    ZstdOnOldDocker(#[source] Box<LoadError>),
}

/// A failed `docker load` of a bundle with zstd layers says why it most likely failed: old dockerd takes
/// them for plain tars and says only that a tar header is invalid.
pub fn explain_failure(error: LoadError, runtime: Runtime, bundle: &Verified) -> LoadError {
    let zstd = |&(offset, size): &(u64, u64)| {
        let mut head = Vec::with_capacity(4);
        let read = bundle
            .source()
            .open_range(offset, size.min(4))
            .and_then(|mut blob| blob.read_to_end(&mut head));
        read.is_ok() && Codec::sniff(&head) == Codec::Zstd
    };
    // Blobs are read in place only in an uncompressed bundle, the kind ferry writes.
    let readable = !bundle.source().is_gzipped().unwrap_or(true);
    if runtime == Runtime::Docker
        && matches!(error, LoadError::Failed { .. })
        && readable
        && bundle.locations().values().any(zstd)
    {
        return LoadError::ZstdOnOldDocker(Box::new(error));
    }
    error
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub runtime: Option<Runtime>,
    pub namespace: String,
    pub address: Option<PathBuf>,
}

/// The runtime to use and its socket: the one asked for, or the first found.
pub fn detect(options: &LoadOptions) -> Result<(Runtime, Option<PathBuf>), LoadError> {
    let exists = |p: &str| Path::new(p).exists();
    let containerd = || {
        options.address.clone().or_else(|| {
            CONTAINERD_SOCKETS
                .iter()
                .find(|s| exists(s))
                .map(PathBuf::from)
        })
    };
    match options.runtime {
        Some(Runtime::Containerd) => Ok((Runtime::Containerd, containerd())),
        Some(Runtime::Docker) => Ok((Runtime::Docker, options.address.clone())),
        Some(Runtime::Podman) => Ok((Runtime::Podman, options.address.clone())),
        None => {
            if let Some(socket) = containerd() {
                Ok((Runtime::Containerd, Some(socket)))
            } else if exists(DOCKER_SOCKET) {
                Ok((Runtime::Docker, Some(PathBuf::from(DOCKER_SOCKET))))
            } else if which("podman") {
                Ok((Runtime::Podman, None))
            } else {
                Err(LoadError::NoRuntime)
            }
        }
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// How a person gives the bundle to a loader by hand.
enum Input {
    File(String),
    /// A pipeline to put before the loader: the parts must be joined or the gzip undone first (ctr and
    /// podman read only a plain tar).
    Piped(String),
}

impl Input {
    fn of(source: &Source) -> Input {
        let gzipped = source.is_gzipped().unwrap_or(false);
        let files = match source.files.as_slice() {
            [file] if !gzipped => return Input::File(file.display().to_string()),
            [file] => file.display().to_string(),
            _ => format!("{}.part-*", source.whole.display()),
        };
        Input::Piped(format!(
            "cat {files}{} | ",
            if gzipped { " | gunzip" } else { "" }
        ))
    }

    /// `tool` as typed by hand: followed by `file_option` and the file, or reading stdin after `stdin_option`.
    fn shown(&self, tool: &str, file_option: &str, stdin_option: &str) -> String {
        match self {
            Input::File(file) => format!("{tool}{file_option} {file}"),
            Input::Piped(pipeline) => format!("{pipeline}{tool}{stdin_option}"),
        }
    }
}

/// What the loader reads: the whole bundle, or one platform of a bundle of several.
pub enum Feed<'a> {
    Whole,
    Platform {
        platform: Platform,
        images: Vec<&'a VerifiedImage>,
    },
}

impl Feed<'_> {
    /// The bytes fed: the bundle's as they are read (joined, before gzip is undone), or the archive of
    /// one platform.
    fn bytes(&self, bundle: &Verified) -> u64 {
        match (self, bundle.delta()) {
            (Feed::Platform { images, .. }, _) => one_platform_size(bundle, images),
            (Feed::Whole, Some(delta)) => merge::whole_size(delta, bundle),
            (Feed::Whole, None) => bundle.bytes(),
        }
    }
}

/// The command that loads the bundle: as ferry runs it (reading stdin), and as a person would type it.
fn command(
    runtime: Runtime,
    socket: Option<&Path>,
    namespace: &str,
    input: &Input,
    platform: Option<&Platform>,
) -> (Command, String) {
    match runtime {
        Runtime::Containerd => {
            let mut command = Command::new("ctr");
            let mut shown = String::from("ctr");
            if let Some(socket) = socket {
                command.arg("--address").arg(socket);
                shown.push_str(&format!(" --address {}", socket.display()));
            }
            command.args(["-n", namespace, "images", "import"]);
            shown.push_str(&format!(" -n {namespace} images import"));
            // Strict: the node's platform exactly, not the neighbours containerd's default lets in.
            if let Some(platform) = platform {
                command.arg("--platform").arg(platform.to_string());
                shown.push_str(&format!(" --platform {platform}"));
            }
            command.arg("-");
            (command, input.shown(&shown, "", " -"))
        }
        Runtime::Docker => {
            let mut command = Command::new("docker");
            let mut shown = String::new();
            if let Some(socket) = socket {
                command.env("DOCKER_HOST", format!("unix://{}", socket.display()));
                shown = format!("DOCKER_HOST=unix://{} ", socket.display());
            }
            command.arg("load");
            (
                command,
                input.shown(&format!("{shown}docker load"), " -i", ""),
            )
        }
        Runtime::Podman => {
            // --address is a podman service socket (`podman system service`), reached with --url.
            let mut command = Command::new("podman");
            let mut shown = String::from("podman");
            if let Some(socket) = socket {
                let url = format!("unix://{}", socket.display());
                command.arg("--url").arg(&url);
                shown.push_str(&format!(" --url {url}"));
            }
            command.arg("load");
            (command, input.shown(&format!("{shown} load"), " -i", ""))
        }
    }
}

/// Where and how to load: the runtime, its socket, and (containerd) the namespace.
#[derive(Debug, Clone)]
pub struct Loader<'a> {
    pub runtime: Runtime,
    pub socket: Option<&'a Path>,
    pub namespace: &'a str,
}

/// Runs the runtime's loader with the bundle on stdin, its bytes reported as one task; returns what the
/// loader printed.
pub fn load(
    bundle: &Verified,
    feed: &Feed,
    loader: &Loader,
    reporter: &dyn Reporter,
) -> Result<String, LoadError> {
    let (source, runtime) = (bundle.source(), loader.runtime);
    let platform = match feed {
        Feed::Platform { platform, .. } => Some(platform),
        Feed::Whole => None,
    };
    let (mut command, mut shown) = command(
        runtime,
        loader.socket,
        loader.namespace,
        &Input::of(source),
        platform,
    );
    let one_platform = match feed {
        Feed::Platform { platform, images } if runtime != Runtime::Containerd => {
            if source.is_gzipped().unwrap_or(false) {
                return Err(LoadError::Compressed(source.whole.clone()));
            }
            // No loader command picks one platform out of the bundle: ferry's own line is the one to retry.
            shown = format!(
                "ferry load {} --runtime {} --platform {platform}",
                source.whole.display(),
                format!("{runtime:?}").to_lowercase()
            );
            Some(images.as_slice())
        }
        _ => None,
    };
    if let Some(delta) = bundle.delta() {
        // A delta is fed as the full bundle it stands for, which no loader command makes of the files.
        shown = format!(
            "ferry load {}{} --runtime {}",
            source.whole.display(),
            delta
                .files
                .iter()
                .map(|base| format!(" --base {}", base.display()))
                .collect::<String>(),
            format!("{runtime:?}").to_lowercase()
        );
    }
    let id = reporter.on_start(&Task {
        action: Action::Load,
        subject: &source.whole.display().to_string(),
        total: feed.bytes(bundle),
        done: 0,
    });
    let tool = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LoadError::Spawn {
            tool: tool.clone(),
            command: shown.clone(),
            source,
        })?;
    let stdin = child.stdin.take().expect("piped");
    // Fed on a thread of its own while the tool's output is drained here: a tool that writes much before
    // it reads would otherwise fill its output pipe while ferry fills its input pipe, each waiting forever.
    let (feeding, output) = std::thread::scope(|scope| {
        let feeder = scope.spawn(move || match one_platform {
            Some(images) => {
                let counted = Counted::new(stdin, reporter, id);
                feed_one_platform(bundle, images, counted).map(|counted| drop(counted.into_inner()))
            }
            None if bundle.delta().is_some() => {
                merge::write_whole(bundle, Counted::new(stdin, reporter, id)).map(drop)
            }
            None => feed_whole(source, stdin, reporter, id),
        });
        let output = child.wait_with_output();
        (feeder.join().expect("feeding does not panic"), output)
    });
    let output = output.map_err(LoadError::Read)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(LoadError::Failed {
            tool,
            status: output.status.to_string(),
            output: said.trim().to_string(),
            command: shown,
        });
    }
    // The loader succeeded, so the feed did too; a feed error with a successful loader is still reported.
    feeding.map_err(LoadError::Read)?;
    reporter.on_complete(id);
    Ok(said)
}

/// Writes the bundle as one tar (parts joined, gzip undone) to the tool's stdin, closing it at the end;
/// the bytes read from the bundle are reported to the task `id`.
fn feed_whole(
    source: &Source,
    mut stdin: impl io::Write,
    reporter: &dyn Reporter,
    id: Id,
) -> io::Result<()> {
    let mut joined: Box<dyn Read> = Box::new(Counted::new(source.joined(0), reporter, id));
    if source.is_gzipped()? {
        joined = Box::new(MultiGzDecoder::new(joined));
    }
    io::copy(&mut joined, &mut stdin)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(runtime: Runtime, files: &[&str], gzipped: bool) -> String {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = files.iter().map(|f| dir.path().join(f)).collect();
        std::fs::write(
            &files[0],
            if gzipped { &[0x1f, 0x8b][..] } else { b"ustar" },
        )
        .unwrap();
        let source = Source {
            files,
            whole: dir.path().join("b.tar"),
        };
        let text = command(runtime, None, "k8s.io", &Input::of(&source), None).1;
        text.replace(&format!("{}/", dir.path().display()), "")
    }

    /// The command printed on failure must work when typed: ctr and podman take neither parts nor gzip.
    #[test]
    fn the_command_to_run_by_hand_joins_parts_and_undoes_gzip() {
        assert_eq!(
            shown(Runtime::Containerd, &["b.tar"], false),
            "ctr -n k8s.io images import b.tar"
        );
        assert_eq!(
            shown(Runtime::Docker, &["b.tar"], false),
            "docker load -i b.tar"
        );
        assert_eq!(
            shown(
                Runtime::Containerd,
                &["b.tar.part-000", "b.tar.part-001"],
                false
            ),
            "cat b.tar.part-* | ctr -n k8s.io images import -"
        );
        assert_eq!(
            shown(Runtime::Podman, &["b.tar.gz"], true),
            "cat b.tar.gz | gunzip | podman load"
        );
    }
}
