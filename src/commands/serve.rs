use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::deliver::{needs_bases, proven};
use super::runtime;
use super::verify::verify_or_explain;
use crate::catalog::Catalogs;
use crate::cli::{LogLevel, ServeArgs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::{to_stderr, Stderr};
use crate::reference::DOCKER_HUB;
use crate::serve::node_config::{node_config, Reach};
use crate::serve::{serve, Content, ServeOptions};
use crate::trust::Anchors;
use crate::verify::{Verified, VerifyOptions};

pub fn run(catalogs: &Catalogs, args: &ServeArgs, out: &mut dyn Write) -> Result<()> {
    let content = Content::load(bundles(catalogs, args, out)?)?;
    let tls = args.tls_cert.clone().zip(args.tls_key.clone());
    if let Some(runtime) = args.print_config {
        let address = advertised(args)?;
        // docker sends only Docker Hub pulls to a mirror: the others must be pulled by the served names.
        let mut served: Vec<String> = content
            .images
            .iter()
            .filter(|image| image.upstream.registry() != DOCKER_HUB)
            .map(|image| match image.upstream.tag() {
                Some(tag) => format!("{}:{tag}", image.name),
                None => format!("{}@{}", image.name, image.manifest),
            })
            .collect();
        served.sort();
        let config = node_config(
            runtime.into(),
            &content.registries(),
            &served,
            &Reach {
                address: &address,
                tls: tls.is_some(),
                auth: args.htpasswd.is_some(),
            },
        );
        to_stderr(&config.notes);
        return out.write_all(config.text.as_bytes()).map_err(Error::Output);
    }
    tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(match args.log_level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        })
        .init();
    let options = ServeOptions {
        listen: args.listen,
        tls,
        htpasswd: args.htpasswd.clone(),
        max_transfers: usize::from(args.max_transfers),
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let images = content.images.len();
    let repositories = content.catalog().len();
    let mut announced = Ok(());
    runtime()?.block_on(serve(content, &options, |bound| {
        tracing::info!("serving {images} image(s) in {repositories} repositories, read-only");
        if options.tls.is_none() {
            tracing::warn!(
                "plain HTTP: nodes must be configured to pull from {bound} as an insecure registry \
                 (--print-config shows how), or serve HTTPS with --tls-cert and --tls-key"
            );
            if options.htpasswd.is_some() {
                tracing::warn!(
                    "--htpasswd without TLS: passwords travel in clear, readable by anyone on the network \
                     path; serve HTTPS with --tls-cert and --tls-key"
                );
            }
        }
        announced = writeln!(out, "listening on {scheme}://{bound}").and_then(|()| out.flush());
    }))?;
    announced.map_err(Error::Output)
}

/// Every bundle to serve, verified. A delta among them is verified again with its bases: the other
/// bundles served and the --base files, those of them it names by sha256.
fn bundles(catalogs: &Catalogs, args: &ServeArgs, out: &mut dyn Write) -> Result<Vec<Verified>> {
    let anchors = Anchors::load(args.trust.trust.as_deref(), args.trust.lock.as_deref())?;
    let options = VerifyOptions {
        deep: anchors.needs_deep(),
        ..Default::default()
    };
    let reports = args
        .paths
        .iter()
        .map(|path| verify_or_explain(path, &options, catalogs))
        .collect::<Result<Vec<_>>>()?;
    let mut files: Vec<(&PathBuf, Digest)> = args
        .paths
        .iter()
        .zip(&reports)
        .map(|(path, report)| (path, report.sha256.clone()))
        .collect();
    for base in &args.bases.bases {
        files.push((base, verify_or_explain(base, &options, catalogs)?.sha256));
    }
    let mut bundles = Vec::with_capacity(reports.len());
    for (path, report) in args.paths.iter().zip(reports) {
        let report = match &report.delta {
            Some(delta) => {
                let bases = files
                    .iter()
                    .filter(|(file, sha256)| {
                        *file != path && delta.bases.iter().any(|b| &b.sha256 == sha256)
                    })
                    .map(|(file, _)| (*file).clone())
                    .collect();
                verify_or_explain(
                    path,
                    &VerifyOptions {
                        bases,
                        ..options.clone()
                    },
                    catalogs,
                )?
            }
            None => report,
        };
        let bundle = proven(report, &anchors, false, out)?;
        needs_bases(&bundle, "serve")?;
        bundles.push(bundle);
    }
    Ok(bundles)
}

/// `HOST:PORT` as nodes reach the server: --advertise (with --listen's port if it has none), or --listen
/// when that names one address.
fn advertised(args: &ServeArgs) -> Result<String> {
    let port = args.listen.port();
    match &args.advertise {
        Some(advertised) => Ok(advertised.address(port)),
        None if args.listen.ip().is_unspecified() || port == 0 => Err(Error::Usage(format!(
            "--print-config needs the address nodes reach this server at: --listen {} names none; add --advertise HOST[:PORT]",
            args.listen
        ))),
        None => Ok(args.listen.to_string()),
    }
}
