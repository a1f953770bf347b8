//! A downloaded disk image becomes a standalone qcow2 the agent made, so nothing a tenant
//! crafted is ever opened by a guest's QEMU: its header, extensions and refcounts are
//! QEMU's own, written by `qemu-img convert`.
//!
//! Three gates before that: our own header reader ([`super::qcow2_header`]) picks the
//! format (or checks the declared one) and refuses backing files, data files and formats
//! QEMU would follow elsewhere, before `qemu-img` runs at all; QEMU's own view with that format given explicitly
//! (`qemu-img info -f FMT --backing-chain`, [`qcow2::check_chain`]) must agree; and the
//! result is read back the same two ways. This module never writes anywhere but the
//! target's directory and never modifies the download.

use super::qcow2::{self, ImageInfo, Qcow2Error};
use super::qcow2_header::{self, Detected, HEADER_READ_BYTES, HeaderError};
use ironvisor_crds::vm::ImageFormat;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Why a download could not become a disk image.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Our header gate refused it; QEMU never saw it.
    #[error("the image is refused before QEMU reads it")]
    Header(#[from] HeaderError),
    /// QEMU's view refused it, or qemu-img failed on it.
    #[error(transparent)]
    Qemu(#[from] Qcow2Error),
    /// The converted image is not what the agent expects of its own images.
    #[error("the converted image is not standalone: {0}")]
    Result(String),
    /// The spec declares qcow2 and the image is not one.
    #[error(
        "the disk declares format qcow2, but the image is not qcow2 (its header reads as \
         {found}); declare the format it has (raw) or leave format out"
    )]
    NotDeclared {
        /// What the header reads as.
        found: &'static str,
    },
    /// Local file error.
    #[error("cannot convert the image in the cache")]
    Io(#[from] std::io::Error),
}

impl ConvertError {
    /// Whether the image itself is refused (the same bytes will always be refused), rather
    /// than a tool or file failure worth retrying.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ConvertError::Header(_)
                | ConvertError::Qemu(Qcow2Error::Unsupported(_))
                | ConvertError::NotDeclared { .. }
        )
    }
}

/// Classify a file by our own header reader, from its first bytes.
pub async fn detect(path: &Path) -> Result<Detected, ConvertError> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::with_capacity(64 << 10);
    (&mut f)
        .take(HEADER_READ_BYTES as u64)
        .read_to_end(&mut buf)
        .await?;
    Ok(qcow2_header::detect(&buf)?)
}

/// QEMU's view of `path` opened as `format` (never probed), accepted by
/// [`qcow2::check_chain`].
pub async fn qemu_view(path: &Path, format: &str) -> Result<ImageInfo, ConvertError> {
    let out = run(Command::new("qemu-img")
        .args([
            "info",
            "-f",
            format,
            "--backing-chain",
            "--output=json",
            "-U",
        ])
        .arg(path))
    .await?;
    let chain: Vec<ImageInfo> = serde_json::from_slice(&out).map_err(Qcow2Error::from)?;
    Ok(qcow2::check_chain(chain)?)
}

async fn run(cmd: &mut Command) -> Result<Vec<u8>, Qcow2Error> {
    let out = cmd.stdin(std::process::Stdio::null()).output().await?;
    if !out.status.success() {
        return Err(Qcow2Error::Tool(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(out.stdout)
}

/// The format to open a download as: the declared one, checked against the header, or the
/// one the header reads as. A declared raw image is raw whatever its first bytes look like
/// (QEMU opened with `-f raw` follows nothing); a declared qcow2 must read as a qcow2 our
/// header gate accepts.
pub async fn format_of(
    download: &Path,
    declared: Option<ImageFormat>,
) -> Result<&'static str, ConvertError> {
    match declared {
        Some(ImageFormat::Raw) => Ok("raw"),
        Some(ImageFormat::Qcow2) => match detect(download).await? {
            d @ Detected::Qcow2(_) => Ok(d.format()),
            Detected::Raw => Err(ConvertError::NotDeclared { found: "raw" }),
        },
        None => Ok(detect(download).await?.format()),
    }
}

/// Convert the verified download at `download` into a standalone qcow2 at `target`
/// (created under a temporary name, renamed into place), opening it as `declared` when the
/// spec names a format. Returns QEMU's view of the result.
pub async fn standalone(
    download: &Path,
    target: &Path,
    declared: Option<ImageFormat>,
) -> Result<ImageInfo, ConvertError> {
    let format = format_of(download, declared).await?;
    let source = qemu_view(download, format).await?;
    let dir = target
        .parent()
        .ok_or_else(|| ConvertError::Result("the target has no directory".into()))?;
    // Deleted on every early return.
    let tmp = tempfile::Builder::new()
        .prefix(".convert-")
        .tempfile_in(dir)?;
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            format,
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
        ])
        .arg(download)
        .arg(tmp.path()))
    .await?;
    let made = qemu_view(tmp.path(), "qcow2").await?;
    if made.virtual_size != source.virtual_size {
        return Err(ConvertError::Result(format!(
            "its size is {} bytes, the download's {}",
            made.virtual_size, source.virtual_size
        )));
    }
    match detect(tmp.path()).await? {
        Detected::Qcow2(h) if h.unknown_extensions().is_empty() => {}
        other => return Err(ConvertError::Result(format!("its header reads {other:?}"))),
    }
    tmp.persist(target).map_err(|e| ConvertError::Io(e.error))?;
    tracing::info!(
        image = %target.display(),
        from = format,
        virtual_size = made.virtual_size,
        "image converted into a standalone qcow2"
    );
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::qcow2_header::tests::{qemu_img, with_extension};

    async fn converted(dir: &Path, download: &Path) -> Result<ImageInfo, ConvertError> {
        let target = dir.join("out.qcow2");
        let r = standalone(download, &target, None).await;
        assert_eq!(
            r.is_ok(),
            target.exists(),
            "a target exactly when converted"
        );
        r
    }

    #[tokio::test]
    async fn a_qcow2_with_a_tenant_extension_becomes_the_agents_own_image() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.qcow2");
        let raw = dir.path().join("in.raw");
        std::fs::write(&raw, vec![5u8; 3 << 20]).unwrap();
        qemu_img(
            &["convert", "-q", "-f", "raw", "-O", "qcow2"]
                .iter()
                .copied()
                .chain([raw.to_str().unwrap(), src.to_str().unwrap()])
                .collect::<Vec<_>>(),
        );
        let crafted = with_extension(std::fs::read(&src).unwrap(), 0x7e7a_0001, b"tenant");
        std::fs::write(&src, &crafted).unwrap();
        let before = qcow2_header::parse(&crafted).unwrap();
        assert_eq!(before.unknown_extensions(), vec![0x7e7a_0001]);

        let info = converted(dir.path(), &src).await.unwrap();
        assert_eq!(
            (info.format.as_str(), info.virtual_size),
            ("qcow2", 3 << 20)
        );
        let out = std::fs::read(dir.path().join("out.qcow2")).unwrap();
        let after = qcow2_header::parse(&out).unwrap();
        assert!(after.unknown_extensions().is_empty(), "{after:?}");
        assert!(
            std::fs::read(&src).unwrap() == crafted,
            "the download is untouched"
        );
        let back = dir.path().join("back.raw");
        qemu_img(
            &["convert", "-q", "-f", "qcow2", "-O", "raw"]
                .iter()
                .copied()
                .chain([
                    dir.path().join("out.qcow2").to_str().unwrap(),
                    back.to_str().unwrap(),
                ])
                .collect::<Vec<_>>(),
        );
        let back = std::fs::read(back).unwrap();
        assert!(
            back.len() == 3 << 20 && back.iter().all(|b| *b == 5),
            "same content"
        );
    }

    #[tokio::test]
    async fn a_raw_download_is_converted_with_raw_given_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.img");
        std::fs::write(&src, vec![3u8; 1 << 20]).unwrap();
        let info = converted(dir.path(), &src).await.unwrap();
        assert_eq!(info.virtual_size, 1 << 20);
        let out = std::fs::read(dir.path().join("out.qcow2")).unwrap();
        assert!(qcow2_header::parse(&out).is_ok());
    }

    #[tokio::test]
    async fn a_qcow2_with_a_backing_file_or_data_file_is_refused_before_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, b"host secret").unwrap();
        for (name, opts) in [
            (
                "b.qcow2",
                format!("backing_file={},backing_fmt=raw", secret.display()),
            ),
            ("d.qcow2", format!("data_file={}", secret.display())),
        ] {
            let p = dir.path().join(name);
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                &opts,
                p.to_str().unwrap(),
                "1M",
            ]);
            let err = converted(dir.path(), &p).await.unwrap_err();
            assert!(matches!(err, ConvertError::Header(_)), "{err}");
            assert!(err.is_refusal());
        }
    }

    #[tokio::test]
    async fn a_vmdk_is_refused_and_qemus_view_refuses_what_our_reader_would_miss() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("x.vmdk");
        std::fs::write(
            &d,
            "# Disk DescriptorFile\nRW 2048 FLAT \"/etc/hostname\" 0\n",
        )
        .unwrap();
        assert!(converted(dir.path(), &d).await.unwrap_err().is_refusal());
        // QEMU's view alone (the second gate), on an image with a backing file.
        let b = dir.path().join("b.qcow2");
        let opts = format!("backing_file={},backing_fmt=raw", d.display());
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &opts,
            b.to_str().unwrap(),
            "1M",
        ]);
        let err = qemu_view(&b, "qcow2").await.unwrap_err();
        assert!(err.to_string().contains("backing file"), "{err}");
    }

    #[tokio::test]
    async fn a_declared_raw_image_stays_raw_even_when_its_first_bytes_are_a_qcow2_header() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, b"host secret").unwrap();
        // A guest's raw disk whose sector 0 holds a qcow2 header naming a host file.
        let crafted = dir.path().join("crafted.img");
        let opts = format!("backing_file={},backing_fmt=raw", secret.display());
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &opts,
            crafted.to_str().unwrap(),
            "1M",
        ]);
        // Whole sectors, as a raw disk is.
        let mut bytes = std::fs::read(&crafted).unwrap();
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        std::fs::write(&crafted, &bytes).unwrap();
        let target = dir.path().join("raw.qcow2");
        let info = standalone(&crafted, &target, Some(ImageFormat::Raw))
            .await
            .unwrap();
        assert_eq!(
            info.virtual_size,
            bytes.len() as u64,
            "its own bytes, as raw"
        );
        let back = dir.path().join("back.raw");
        qemu_img(&[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            target.to_str().unwrap(),
            back.to_str().unwrap(),
        ]);
        let back = std::fs::read(back).unwrap();
        assert_eq!(
            back, bytes,
            "the guest sees the header bytes, not the host file"
        );
        // Undeclared, the same bytes are read as qcow2 and refused for their backing file.
        let err = standalone(&crafted, &dir.path().join("auto.qcow2"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ConvertError::Header(_)), "{err}");
    }

    #[tokio::test]
    async fn a_declared_qcow2_that_is_not_one_is_refused_naming_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.img");
        std::fs::write(&src, vec![3u8; 1 << 20]).unwrap();
        let target = dir.path().join("out.qcow2");
        let err = standalone(&src, &target, Some(ImageFormat::Qcow2))
            .await
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(err.to_string().contains("declares format qcow2"), "{err}");
        assert!(!target.exists());
        // Declared raw, the same file is fine.
        standalone(&src, &target, Some(ImageFormat::Raw))
            .await
            .unwrap();
    }
}
