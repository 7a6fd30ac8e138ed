//! Load a verified bundle into the node's container runtime by running the runtime's own tool, feeding it
//! on stdin a tar of what verify proved (parts joined, gzip undone, every blob checked again on its way),
//! so split and compressed bundles load as they are, and a file that changed since verify loads nothing.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::feed::{Archive, NotAsVerified, Stopped};
use super::platform::one_platform;
use crate::image::Platform;
use crate::layer_codec::Codec;
use crate::progress::{Action, Counted, Reporter, Task};
use crate::tarball::read::Source;
use crate::verify::{Verified, VerifiedImage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    Docker,
    Podman,
}

impl Runtime {
    /// As `--runtime` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no container runtime found ({looked}): name one with --runtime and --address")]
    NoRuntime { looked: String },
    #[error(
        "this node uses containerd ({signs}), but it does not listen where ferry looked ({looked}); \
         ferry loads into no other runtime unless told: give containerd's socket with --address SOCKET, \
         or another runtime with --runtime docker or --runtime podman"
    )]
    ContainerdNotFound { signs: String, looked: String },
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
    #[error(
        "{} no longer reads as it did when verified: {cause}; the feed to {tool} was cut inside that \
         entry, before any index or manifest, {}. Verify the bundle again, and load it from local disk \
         if it is on a shared folder or a removable device",
        .bundle.display(),
        if *.refused { format!("and {tool} refused it: nothing was loaded") }
        else { format!("yet {tool} reported success: check what it holds") }
    )]
    Changed {
        bundle: PathBuf,
        tool: String,
        cause: NotAsVerified,
        /// Whether the loader failed, as it does on a tar cut inside an entry.
        refused: bool,
    },
    #[error("{tool} stopped reading the bundle before its end")]
    Feed {
        tool: String,
        #[source]
        source: io::Error,
    },
    #[error("lost track of {tool} while it loaded")]
    Wait {
        tool: String,
        #[source]
        source: io::Error,
    },
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
    let archive = match feed {
        Feed::Platform { platform, images } if runtime != Runtime::Containerd => {
            if source.is_gzipped().unwrap_or(false) {
                return Err(LoadError::Compressed(source.whole.clone()));
            }
            // No loader command picks one platform out of the bundle: ferry's own line is the one to retry.
            shown = format!(
                "ferry load {} --runtime {} --platform {platform}",
                source.whole.display(),
                runtime.name()
            );
            one_platform(bundle, images)
        }
        _ => Archive::whole(bundle),
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
            runtime.name()
        );
    }
    let id = reporter.on_start(&Task {
        action: Action::Load,
        subject: &source.whole.display().to_string(),
        total: archive.size(),
        done: 0,
    });
    let tool = command.get_program().to_string_lossy().into_owned();
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
    // The feed's end closes stdin, cut or not.
    let (feeding, output) = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| {
            archive
                .write(source, Counted::new(stdin, reporter, id))
                .map(|counted| drop(counted.into_inner()))
        });
        let output = child.wait_with_output();
        (feeder.join().expect("feeding does not panic"), output)
    });
    let output = output.map_err(|source| LoadError::Wait {
        tool: tool.clone(),
        source,
    })?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // A bundle that reads differently now is the story, whatever the loader made of the cut feed.
    if let Err(Stopped::Bundle(cause)) = feeding {
        return Err(LoadError::Changed {
            bundle: source.whole.clone(),
            tool,
            cause,
            refused: !output.status.success(),
        });
    }
    if !output.status.success() {
        return Err(LoadError::Failed {
            tool: format!("{tool:?}"),
            status: output.status.to_string(),
            output: said.trim().to_string(),
            command: shown,
        });
    }
    if let Err(Stopped::Loader(source)) = feeding {
        return Err(LoadError::Feed { tool, source });
    }
    reporter.on_complete(id);
    Ok(said)
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
