//! Which runtime `load` loads into when it is not told, and why: containerd first, at its usual sockets
//! or where the node's own files say it listens (kubelet's configuration, `/etc/containerd/config.toml`,
//! a running containerd's command line); then docker's socket; then podman on `PATH`. A node that shows
//! containerd is used (kubelet's runtime, on a Kubernetes node) gets containerd or an error that says how
//! to point ferry at it, never another runtime by default.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::load::{LoadError, LoadOptions, Runtime};

/// Where containerd listens by default: its own, k3s's and RKE2's, microk8s's.
const CONTAINERD_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/snap/microk8s/common/run/containerd.sock",
];
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// Where kubelet's runtime endpoint is set: its configuration file (`containerRuntimeEndpoint`), and the
/// files its flags come from (`--container-runtime-endpoint`: kubeadm's, Debian's and Red Hat's).
const KUBELET_FILES: &[&str] = &[
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
];
/// Configuration files are small; a larger one is not read.
const MAX_CONFIG: u64 = 1 << 20;

/// The runtime to load into, its socket, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub runtime: Runtime,
    pub socket: Option<PathBuf>,
    pub why: String,
}

/// The node's files (`/`, or a directory standing for it) and the `PATH` tools are found on.
pub struct Node {
    root: PathBuf,
    path: Option<std::ffi::OsString>,
}

/// What says containerd is used here, and the sockets that would then be its.
#[derive(Default)]
struct Containerd {
    /// Each socket with what names it.
    named: Vec<(PathBuf, String)>,
    /// Signs that it is used, each a phrase.
    signs: Vec<String>,
}

impl Node {
    pub fn system() -> Node {
        Node {
            root: "/".into(),
            path: std::env::var_os("PATH"),
        }
    }

    /// The runtime `options` name, or the one this node shows.
    pub fn choose(&self, options: &LoadOptions) -> Result<Choice, LoadError> {
        let told = |runtime: Runtime| Choice {
            runtime,
            socket: options.address.clone(),
            why: [
                options.runtime.map(|r| format!("--runtime {}", r.name())),
                options
                    .address
                    .as_ref()
                    .map(|a| format!("--address {}", a.display())),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        };
        match (options.runtime, &options.address) {
            (runtime, Some(_)) => Ok(told(runtime.unwrap_or(Runtime::Containerd))),
            (Some(Runtime::Containerd), None) => {
                let containerd = self.containerd();
                Ok(match self.listening(&containerd) {
                    Some((socket, why)) => Choice {
                        runtime: Runtime::Containerd,
                        socket: Some(socket),
                        why,
                    },
                    // ctr's own default, which it says it cannot reach.
                    None => told(Runtime::Containerd),
                })
            }
            (Some(runtime), None) => Ok(told(runtime)),
            (None, None) => self.detect(),
        }
    }

    fn detect(&self) -> Result<Choice, LoadError> {
        let containerd = self.containerd();
        if let Some((socket, why)) = self.listening(&containerd) {
            return Ok(Choice {
                runtime: Runtime::Containerd,
                socket: Some(socket),
                why,
            });
        }
        let looked = containerd.looked();
        if !containerd.signs.is_empty() {
            return Err(LoadError::ContainerdNotFound {
                signs: containerd.signs.join("; "),
                looked,
            });
        }
        let none = format!(
            "no containerd: {looked}, and no kubelet configuration, {CONTAINERD_CONFIG} or running \
             containerd to name another"
        );
        if self.is_socket(Path::new(DOCKER_SOCKET)) {
            return Ok(Choice {
                runtime: Runtime::Docker,
                socket: Some(self.at(Path::new(DOCKER_SOCKET))),
                why: format!("its socket {DOCKER_SOCKET}; {none}"),
            });
        }
        let docker = format!("no docker socket at {DOCKER_SOCKET}");
        if self.on_path("podman") {
            return Ok(Choice {
                runtime: Runtime::Podman,
                socket: None,
                why: format!("on PATH; {none}; {docker}"),
            });
        }
        Err(LoadError::NoRuntime {
            looked: format!("{none}; {docker}; no podman on PATH"),
        })
    }

    /// The first socket of `containerd` that is one, and why it is containerd's.
    fn listening(&self, containerd: &Containerd) -> Option<(PathBuf, String)> {
        let (socket, named) = containerd
            .named
            .iter()
            .find(|(socket, _)| self.is_socket(socket))?;
        Some((
            self.at(socket),
            format!("its socket {}, {named}", socket.display()),
        ))
    }

    /// containerd's usual sockets, and every sign of it this node gives with the socket each names.
    fn containerd(&self) -> Containerd {
        let mut found = Containerd::default();
        for socket in CONTAINERD_SOCKETS {
            found
                .named
                .push((socket.into(), "where it listens by default".into()));
        }
        for file in KUBELET_FILES {
            if let Some(endpoint) = self.read(file).as_deref().and_then(runtime_endpoint) {
                let socket = PathBuf::from(endpoint.trim_start_matches("unix://"));
                if socket.to_string_lossy().contains("containerd") {
                    found.signs.push(format!("{file} gives kubelet {endpoint}"));
                    found.named.push((socket, format!("named by {file}")));
                }
            }
        }
        if let Some(text) = self.read(CONTAINERD_CONFIG) {
            match grpc_address(&text) {
                Some(socket) => {
                    found.signs.push(format!(
                        "{CONTAINERD_CONFIG} sets its socket to {}",
                        socket.display()
                    ));
                    found
                        .named
                        .push((socket, format!("as {CONTAINERD_CONFIG} sets it")));
                }
                None => found.signs.push(format!("{CONTAINERD_CONFIG} exists")),
            }
        }
        for (pid, socket) in self.running_containerd() {
            found.signs.push(format!("containerd runs (process {pid})"));
            if let Some(socket) = socket {
                found.named.push((
                    socket,
                    format!("that of the containerd running as process {pid}"),
                ));
            }
        }
        found
    }

    /// Each containerd process (not one a dockerd runs for itself) and the socket its command line or
    /// configuration gives, if any.
    fn running_containerd(&self) -> Vec<(u32, Option<PathBuf>)> {
        let Ok(entries) = std::fs::read_dir(self.root.join("proc")) else {
            return Vec::new();
        };
        let mut found: Vec<(u32, Option<PathBuf>)> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| self.runs(pid, "containerd"))
            .filter(|&pid| {
                let parent = self.proc(pid, "stat").and_then(|s| parent_of(&s));
                parent.is_none_or(|parent| !self.runs(parent, "dockerd"))
            })
            .map(|pid| {
                (
                    pid,
                    self.proc(pid, "cmdline").and_then(|c| self.socket_of(&c)),
                )
            })
            .collect();
        found.sort();
        found
    }

    /// The socket a containerd command line gives: `--address`, or its `--config` file's.
    fn socket_of(&self, cmdline: &str) -> Option<PathBuf> {
        let args: Vec<&str> = cmdline.split('\0').collect();
        let value = |names: &[&str]| {
            args.iter().enumerate().find_map(|(i, arg)| {
                names.iter().find_map(|name| {
                    arg.strip_prefix(&format!("{name}="))
                        .map(str::to_string)
                        .or_else(|| {
                            (arg == name)
                                .then(|| args.get(i + 1).map(|v| v.to_string()))
                                .flatten()
                        })
                })
            })
        };
        if let Some(address) = value(&["--address", "-a"]) {
            return Some(address.into());
        }
        let config = value(&["--config", "-c"])?;
        grpc_address(&self.read(&config)?)
    }

    /// Whether process `pid` is `command`.
    fn runs(&self, pid: u32, command: &str) -> bool {
        self.proc(pid, "comm").is_some_and(|c| c.trim() == command)
    }

    fn proc(&self, pid: u32, file: &str) -> Option<String> {
        let path = self.root.join("proc").join(pid.to_string()).join(file);
        crate::io::read_side_text(&path, MAX_CONFIG).ok()
    }

    /// A configuration file's text, if it is a regular file of a plausible size.
    fn read(&self, file: &str) -> Option<String> {
        crate::io::read_side_text(&self.at(Path::new(file)), MAX_CONFIG).ok()
    }

    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn on_path(&self, binary: &str) -> bool {
        self.path
            .as_ref()
            .is_some_and(|path| std::env::split_paths(path).any(|dir| dir.join(binary).is_file()))
    }

    fn is_socket(&self, path: &Path) -> bool {
        std::fs::metadata(self.at(path)).is_ok_and(|m| m.file_type().is_socket())
    }
}

impl Containerd {
    /// Where containerd was looked for, as a phrase.
    fn looked(&self) -> String {
        let mut sockets: Vec<String> = Vec::new();
        for (socket, _) in &self.named {
            let shown = socket.display().to_string();
            if !sockets.contains(&shown) {
                sockets.push(shown);
            }
        }
        format!("no socket at {}", sockets.join(", "))
    }
}

/// kubelet's runtime endpoint, as its configuration (`containerRuntimeEndpoint: …`) or its flags
/// (`--container-runtime-endpoint=…`) give it.
fn runtime_endpoint(text: &str) -> Option<String> {
    ["containerRuntimeEndpoint:", "--container-runtime-endpoint"]
        .iter()
        .find_map(|key| {
            let after = &text[text.find(key)? + key.len()..];
            let value = after.trim_start_matches(['=', ' ', '\t', '"', '\'']);
            let end = value
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(value.len());
            let value = &value[..end];
            (!value.is_empty()).then(|| value.to_string())
        })
}

/// `[grpc] address` of a containerd configuration.
fn grpc_address(text: &str) -> Option<PathBuf> {
    let config: toml::Table = text.parse().ok()?;
    let address = config.get("grpc")?.get("address")?.as_str()?;
    (!address.is_empty()).then(|| address.trim_start_matches("unix://").into())
}

/// The parent process in `/proc/PID/stat` (the field after the state, which follows the command name
/// in parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node in a directory: its files, sockets and processes are made there; `PATH` holds only its
    /// `bin`.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::Builder::new()
                .prefix("n")
                .tempdir_in("/tmp")
                .unwrap();
            std::fs::create_dir(dir.path().join("bin")).unwrap();
            Fake { dir }
        }

        fn node(&self) -> Node {
            Node {
                root: self.dir.path().to_path_buf(),
                path: Some(self.dir.path().join("bin").into()),
            }
        }

        fn file(&self, path: &str, text: &str) -> &Fake {
            let path = self.dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
            self
        }

        fn socket(&self, path: &str) -> &Fake {
            let path = self.dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::os::unix::net::UnixListener::bind(path).unwrap();
            self
        }

        fn process(&self, pid: u32, parent: u32, command: &[&str]) -> &Fake {
            let name = Path::new(command[0]).file_name().unwrap().to_str().unwrap();
            self.file(&format!("/proc/{pid}/comm"), &format!("{name}\n"))
                .file(
                    &format!("/proc/{pid}/stat"),
                    &format!("{pid} ({name}) S {parent} 1 1"),
                )
                .file(
                    &format!("/proc/{pid}/cmdline"),
                    &(command.join("\0") + "\0"),
                )
        }

        fn at(&self, path: &str) -> PathBuf {
            self.dir.path().join(path.trim_start_matches('/'))
        }

        fn choose(&self) -> Result<Choice, String> {
            let options = LoadOptions {
                runtime: None,
                namespace: "k8s.io".into(),
                address: None,
            };
            self.node().choose(&options).map_err(|e| e.to_string())
        }
    }

    const NO_CONTAINERD: &str = "no containerd: no socket at /run/containerd/containerd.sock, \
        /run/k3s/containerd/containerd.sock, /var/snap/microk8s/common/run/containerd.sock, and no kubelet \
        configuration, /etc/containerd/config.toml or running containerd to name another";

    #[test]
    fn nothing_found_says_where_ferry_looked() {
        assert_eq!(
            Fake::new().choose().unwrap_err(),
            format!(
                "no container runtime found ({NO_CONTAINERD}; no docker socket at /var/run/docker.sock; no \
                 podman on PATH): name one with --runtime and --address"
            )
        );
    }

    /// podman is the last resort, and the choice says what was not found first.
    #[test]
    fn podman_is_chosen_only_when_nothing_else_is_there_and_says_so() {
        let fake = Fake::new();
        fake.file("/bin/podman", "");
        assert_eq!(
            fake.choose().unwrap(),
            Choice {
                runtime: Runtime::Podman,
                socket: None,
                why: format!("on PATH; {NO_CONTAINERD}; no docker socket at /var/run/docker.sock"),
            }
        );
        fake.socket("/var/run/docker.sock");
        assert_eq!(
            fake.choose().unwrap(),
            Choice {
                runtime: Runtime::Docker,
                socket: Some(fake.at("/var/run/docker.sock")),
                why: format!("its socket /var/run/docker.sock; {NO_CONTAINERD}"),
            }
        );
        fake.socket("/run/k3s/containerd/containerd.sock");
        assert_eq!(
            fake.choose().unwrap(),
            Choice {
                runtime: Runtime::Containerd,
                socket: Some(fake.at("/run/k3s/containerd/containerd.sock")),
                why: "its socket /run/k3s/containerd/containerd.sock, where it listens by default"
                    .into(),
            }
        );
    }

    /// The node: containerd listening elsewhere than by default, podman installed too. Its own
    /// configuration says where; ferry goes there and says why.
    #[test]
    fn containerd_at_another_socket_is_found_where_the_node_says() {
        let fake = Fake::new();
        fake.file("/bin/podman", "")
            .file(
                "/etc/containerd/config.toml",
                "version = 2\n[grpc]\n  address = \"/srv/ctrd/c.sock\"\n",
            )
            .socket("/srv/ctrd/c.sock");
        assert_eq!(
            fake.choose().unwrap(),
            Choice {
                runtime: Runtime::Containerd,
                socket: Some(fake.at("/srv/ctrd/c.sock")),
                why: "its socket /srv/ctrd/c.sock, as /etc/containerd/config.toml sets it".into(),
            }
        );

        let fake = Fake::new();
        fake.file("/bin/podman", "")
            .file(
                "/var/lib/kubelet/kubeadm-flags.env",
                "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///opt/k/containerd.sock --pod-infra-container-image=pause:3.9\"\n",
            )
            .socket("/opt/k/containerd.sock");
        assert_eq!(
            fake.choose().unwrap().why,
            "its socket /opt/k/containerd.sock, named by /var/lib/kubelet/kubeadm-flags.env"
        );

        let fake = Fake::new();
        fake.file("/bin/podman", "")
            .file("/etc/ctrd.toml", "[grpc]\naddress = \"/x/c.sock\"\n")
            .process(
                40,
                1,
                &["/usr/bin/containerd", "--config", "/etc/ctrd.toml"],
            )
            .socket("/x/c.sock");
        assert_eq!(
            fake.choose().unwrap().why,
            "its socket /x/c.sock, that of the containerd running as process 40"
        );
    }

    /// A node that shows containerd in use gets containerd or an error saying how to point ferry at it,
    /// whatever else is installed.
    #[test]
    fn a_node_that_uses_containerd_gets_no_other_runtime_untold() {
        let fake = Fake::new();
        fake.file("/bin/podman", "")
            .socket("/var/run/docker.sock")
            .file(
                "/var/lib/kubelet/config.yaml",
                "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/custom/containerd.sock\n",
            )
            .file("/etc/containerd/config.toml", "version = 2\n")
            .process(7, 1, &["containerd"]);
        assert_eq!(
            fake.choose().unwrap_err(),
            "this node uses containerd (/var/lib/kubelet/config.yaml gives kubelet \
             unix:///run/custom/containerd.sock; /etc/containerd/config.toml exists; containerd runs (process \
             7)), but it does not listen where ferry looked (no socket at /run/containerd/containerd.sock, \
             /run/k3s/containerd/containerd.sock, /var/snap/microk8s/common/run/containerd.sock, \
             /run/custom/containerd.sock); ferry loads into no other runtime unless told: give containerd's \
             socket with --address SOCKET, or another runtime with --runtime docker or --runtime podman"
        );
        let told = LoadOptions {
            runtime: Some(Runtime::Podman),
            namespace: "k8s.io".into(),
            address: None,
        };
        assert_eq!(
            fake.node().choose(&told).unwrap(),
            Choice {
                runtime: Runtime::Podman,
                socket: None,
                why: "--runtime podman".into()
            }
        );
    }

    /// The containerd a dockerd runs for itself is docker's, not the node's.
    #[test]
    fn dockers_own_containerd_is_not_the_nodes() {
        let fake = Fake::new();
        fake.socket("/var/run/docker.sock")
            .process(10, 1, &["/usr/bin/dockerd"])
            .process(
                11,
                10,
                &[
                    "containerd",
                    "--address",
                    "/var/run/docker/containerd/containerd.sock",
                ],
            )
            .socket("/var/run/docker/containerd/containerd.sock");
        assert_eq!(fake.choose().unwrap().runtime, Runtime::Docker);
    }
}
