//! `ironvisor-release`: the steps of `hack/release.sh` that need more than a shell.
//!
//! - `image`: a root filesystem directory → an OCI image archive; prints the image digest.
//! - `sbom`: `cargo metadata` output and the images' package lock files → CycloneDX JSON.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ironvisor_release::{layer, oci, packages, sbom};

/// Release tooling for hack/release.sh.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build an OCI image archive of one layer from a root filesystem directory.
    Image {
        /// The root filesystem.
        #[arg(long)]
        rootfs: PathBuf,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
        /// The entrypoint (repeat for its fixed arguments).
        #[arg(long, required = true)]
        entrypoint: Vec<String>,
        /// `uid:gid` it runs as.
        #[arg(long)]
        user: String,
        /// `NAME=value` (repeat).
        #[arg(long)]
        env: Vec<String>,
        /// `key=value` label (repeat).
        #[arg(long)]
        label: Vec<String>,
        /// The tag recorded in the archive's index.
        #[arg(long)]
        tag: String,
        /// Creation time and every file's mtime, seconds since the epoch.
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        created: u64,
    },
    /// Write the CycloneDX SBOM.
    Sbom {
        /// `cargo metadata --format-version 1` output.
        #[arg(long)]
        metadata: PathBuf,
        /// Package name of a shipped binary (repeat).
        #[arg(long = "root", required = true)]
        roots: Vec<String>,
        /// `IMAGE=LOCKFILE` (repeat).
        #[arg(long = "image")]
        images: Vec<String>,
        /// The release's version.
        #[arg(long)]
        version: String,
        /// The commit.
        #[arg(long)]
        commit: String,
        /// Time of the release, seconds since the epoch.
        #[arg(long, env = "SOURCE_DATE_EPOCH")]
        created: u64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{what} {i:?} is not KEY=VALUE"))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Image {
            rootfs,
            out,
            entrypoint,
            user,
            env,
            label,
            tag,
            created,
        } => {
            let tar = layer::layer_tar(&rootfs, created)?;
            let spec = oci::ImageSpec {
                entrypoint,
                user,
                env,
                labels: pairs(&label, "label")?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                created,
                ref_name: tag,
            };
            let image = oci::image(&tar, &spec)?;
            let file =
                fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut w = BufWriter::new(file);
            oci::write_archive(&image, created, &mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            println!("{}", image.manifest.descriptor.digest);
        }
        Cmd::Sbom {
            metadata,
            roots,
            images,
            version,
            commit,
            created,
            out,
        } => {
            let text =
                fs::read(&metadata).with_context(|| format!("reading {}", metadata.display()))?;
            let meta: sbom::Metadata = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not cargo metadata output", metadata.display()))?;
            let mut pinned = Vec::new();
            for (image, lock) in pairs(&images, "image")? {
                pinned.push((image, packages::read(lock.as_ref())?));
            }
            let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
            let release = sbom::Release {
                version,
                commit,
                created,
            };
            let bom = sbom::sbom(&release, &meta, &roots, &pinned)?;
            let mut body = serde_json::to_vec_pretty(&bom)?;
            body.push(b'\n');
            fs::write(&out, body).with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}
