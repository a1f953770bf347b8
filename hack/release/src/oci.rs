//! An OCI image layout (image-spec 1.1) with one layer, written as one tar archive: what
//! `skopeo copy oci-archive:FILE docker://REGISTRY/NAME` pushes and `podman load` reads.
//!
//! Owns the blobs (config, manifest, the gzipped layer), the index that names the image, and
//! the archive around them, all byte-for-byte reproducible: JSON with a fixed field order,
//! gzip with no name and mtime 0, archive entries sorted with one mtime. Never reads the
//! clock: the creation time is the caller's (`SOURCE_DATE_EPOCH`).

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image configuration.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzipped layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The creation time is not a time.
    #[error("{0} is not a time in seconds since the epoch")]
    Created(u64),
    /// Writing the archive failed.
    #[error("cannot write the image archive")]
    Write(#[source] io::Error),
}

/// What the image runs and says about itself.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// The program and its fixed arguments.
    pub entrypoint: Vec<String>,
    /// `uid:gid` the entrypoint runs as unless the pod says otherwise.
    pub user: String,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// Labels in the configuration, and the same as manifest annotations.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The tag recorded in the index (`org.opencontainers.image.ref.name`).
    pub ref_name: String,
}

/// A content descriptor.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Descriptor {
    /// What the blob is.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// Annotations (the index's tag).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A blob and its descriptor.
#[derive(Debug, Clone)]
pub struct Blob {
    /// The descriptor naming it.
    pub descriptor: Descriptor,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob(media_type: &str, bytes: Vec<u8>) -> Blob {
    Blob {
        descriptor: Descriptor {
            media_type: media_type.to_owned(),
            digest: digest(&bytes),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        bytes,
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("our image documents always serialize")
}

#[derive(Serialize)]
struct Config<'a> {
    created: &'a str,
    architecture: &'static str,
    os: &'static str,
    config: RunConfig<'a>,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig<'a> {
    user: &'a str,
    env: &'a [String],
    entrypoint: &'a [String],
    working_dir: &'static str,
    labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'static str,
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: &'a Descriptor,
    layers: [&'a Descriptor; 1],
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: [&'a Descriptor; 1],
}

/// The blobs of an image of one layer (`layer_tar`, uncompressed) and its index.
pub struct Image {
    /// The gzipped layer.
    pub layer: Blob,
    /// The configuration.
    pub config: Blob,
    /// The manifest: its digest is the image's digest.
    pub manifest: Blob,
    /// `index.json`.
    pub index: Vec<u8>,
}

/// Gzip with no file name and mtime 0, so the bytes depend on the input only.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// Assemble the image of `spec` around `layer_tar`.
pub fn image(layer_tar: &[u8], spec: &ImageSpec) -> Result<Image, OciError> {
    let created = i64::try_from(spec.created)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .ok_or(OciError::Created(spec.created))?
        .to_string();
    let layer = blob(LAYER_MEDIA_TYPE, gzip(layer_tar));
    let config = Config {
        created: &created,
        architecture: "amd64",
        os: "linux",
        config: RunConfig {
            user: &spec.user,
            env: &spec.env,
            entrypoint: &spec.entrypoint,
            working_dir: "/",
            labels: &spec.labels,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![digest(layer_tar)],
        },
        history: vec![History {
            created: &created,
            created_by: "hack/release.sh",
        }],
    };
    let config = blob(CONFIG_MEDIA_TYPE, json(&config));
    let mut annotations = spec.labels.clone();
    annotations.insert("org.opencontainers.image.created".into(), created);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: &config.descriptor,
        layers: [&layer.descriptor],
        annotations: &annotations,
    };
    let manifest = blob(MANIFEST_MEDIA_TYPE, json(&manifest));
    let mut named = manifest.descriptor.clone();
    named.annotations.insert(
        "org.opencontainers.image.ref.name".into(),
        spec.ref_name.clone(),
    );
    let index = json(&Index {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: [&named],
    });
    Ok(Image {
        layer,
        config,
        manifest,
        index,
    })
}

fn append(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    data: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    if path.ends_with('/') {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
    }
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data)
}

/// Write `image` as an OCI layout archive to `out`, every entry with mtime `mtime`.
pub fn write_archive(image: &Image, mtime: u64, out: impl Write) -> Result<(), OciError> {
    let mut files: Vec<(String, &[u8])> = vec![
        ("blobs/".into(), &[]),
        ("blobs/sha256/".into(), &[]),
        ("index.json".into(), &image.index),
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
    ];
    for b in [&image.layer, &image.config, &image.manifest] {
        let hex = b.descriptor.digest.trim_start_matches("sha256:");
        files.push((format!("blobs/sha256/{hex}"), &b.bytes));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut builder = tar::Builder::new(out);
    for (path, data) in files {
        append(&mut builder, &path, data, mtime).map_err(OciError::Write)?;
    }
    builder.finish().map_err(OciError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn spec() -> ImageSpec {
        ImageSpec {
            entrypoint: vec!["/usr/local/bin/tool".into()],
            user: "65532:65532".into(),
            env: vec!["PATH=/usr/bin".into()],
            labels: BTreeMap::from([("org.opencontainers.image.version".into(), "1.0".into())]),
            created: 1_700_000_000,
            ref_name: "1.0".into(),
        }
    }

    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "hello", &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn files(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (e.path().unwrap().to_str().unwrap().to_owned(), data)
            })
            .collect()
    }

    fn blob_of<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        let bytes = files.get(&path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(
            super::digest(bytes),
            digest,
            "{path} does not match its name"
        );
        bytes
    }

    #[test]
    fn the_index_leads_through_the_manifest_to_config_and_layer() {
        let image = image(&layer(), &spec()).unwrap();
        let mut out = Vec::new();
        write_archive(&image, 1_700_000_000, &mut out).unwrap();
        let files = files(&out);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let named = &index["manifests"][0];
        assert_eq!(
            named["annotations"]["org.opencontainers.image.ref.name"],
            "1.0"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(blob_of(&files, named["digest"].as_str().unwrap())).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        let config: serde_json::Value = serde_json::from_slice(blob_of(
            &files,
            manifest["config"]["digest"].as_str().unwrap(),
        ))
        .unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let gz = blob_of(&files, manifest["layers"][0]["digest"].as_str().unwrap());
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(tar_bytes, layer());
        assert_eq!(config["rootfs"]["diff_ids"][0], digest(&tar_bytes));
    }

    #[test]
    fn two_builds_give_the_same_archive_and_another_time_another_digest() {
        let build = |spec: &ImageSpec| {
            let image = image(&layer(), spec).unwrap();
            let mut out = Vec::new();
            write_archive(&image, spec.created, &mut out).unwrap();
            (image.manifest.descriptor.digest, out)
        };
        let (d1, a1) = build(&spec());
        let (d2, a2) = build(&spec());
        assert_eq!(d1, d2);
        assert!(a1 == a2, "the archives differ");
        let later = ImageSpec {
            created: 1_700_000_001,
            ..spec()
        };
        assert_ne!(build(&later).0, d1);
    }
}
