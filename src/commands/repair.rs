use std::io::Write;

use super::verify::{damaged, verify_or_explain, write_verdicts};
use crate::catalog::Catalogs;
use crate::cli::RepairArgs;
use crate::error::{Error, Result};
use crate::recovery::RecoveryError;
use crate::repair::{repair_bundle, Outcome, RepairError};
use crate::trust::allowed_signers::AllowedSigners;
use crate::trust::Anchors;
use crate::verify::{verify, VerifyOptions};

/// Repairs the bundle from its recovery data, then verifies it as `ferry verify` does.
pub fn run(catalogs: &Catalogs, args: &RepairArgs, out: &mut dyn Write) -> Result<()> {
    let anchors = Anchors::load(args.trust.trust.as_deref(), args.trust.lock.as_deref())?;
    let signers = args
        .trust
        .trust
        .as_deref()
        .map(AllowedSigners::load)
        .transpose()?;
    crate::interrupt::install();
    let line = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(Error::Output);
    match repair_bundle(&args.path, signers.as_ref()) {
        Ok(Outcome::Intact { blocks }) => line(
            out,
            format!("nothing to repair: all {blocks} blocks match the recovery data"),
        )?,
        Ok(Outcome::Repaired {
            files,
            damaged_blocks,
            recovery_blocks,
            checked_against,
        }) => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            line(
                out,
                format!(
                    "repaired: {} ({damaged_blocks} damaged blocks rebuilt; {recovery_blocks} recovery blocks were available)",
                    names.join(", ")
                ),
            )?;
            let checked: Vec<String> = checked_against
                .iter()
                .map(|f| f.display().to_string())
                .collect();
            line(
                out,
                match checked.is_empty() {
                    true => "no .sha256 beside the bundle: the recovery data's MD5s alone vouched for the repair".into(),
                    false => format!("the repaired bundle matches {}", checked.join(", ")),
                },
            )?;
        }
        Err(RepairError::Recovery(error @ RecoveryError::NotEnough { .. })) => {
            write_intact_images(catalogs, args, out)?;
            return Err(error.into());
        }
        Err(error) => return Err(error.into()),
    }
    let options = VerifyOptions {
        deep: anchors.needs_deep(),
        ..Default::default()
    };
    let report = verify_or_explain(&args.path, &options, catalogs)?;
    let trust = anchors.check(&report);
    write_verdicts(out, &report).map_err(Error::Output)?;
    trust.write(out).map_err(Error::Output)?;
    if !report.intact() {
        return Err(damaged(&report));
    }
    trust.refusal(&args.path).map_or(Ok(()), |e| Err(e.into()))
}

/// Which images of a bundle beyond repair are intact, so that they can be delivered alone.
fn write_intact_images(catalogs: &Catalogs, args: &RepairArgs, out: &mut dyn Write) -> Result<()> {
    let report = match verify(&args.path, &VerifyOptions::default(), catalogs) {
        Ok(report) => report,
        Err(error) => {
            return writeln!(
                out,
                "intact images: cannot be told, the bundle cannot be read past its damage ({})",
                crate::causes::chain(&error)
            )
            .map_err(Error::Output)
        }
    };
    let mut intact: Vec<&str> = report
        .images
        .iter()
        .filter(|i| i.problems.is_empty())
        .map(|i| i.name.as_str())
        .collect();
    intact.dedup();
    let damaged = report
        .images
        .iter()
        .filter(|i| !i.problems.is_empty())
        .count();
    let listed = match intact.is_empty() {
        true => "none".to_string(),
        false => format!(
            "{} (push them alone: ferry push {} --intact-only)",
            intact.join(", "),
            args.path.display()
        ),
    };
    writeln!(
        out,
        "intact images ({} of {}): {listed}",
        intact.len(),
        intact.len() + damaged
    )
    .map_err(Error::Output)
}
