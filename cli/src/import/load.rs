//! Loading a source: detect its kind, unpack an OVA, parse the descriptor, check the
//! manifest's checksums, and inspect every disk. Everything before the first byte of a
//! converted image is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::bundle::{self, Algorithm, BundleError, Manifest};
use super::gunzip::{self, GunzipError};
use super::model::SourceVm;
use super::ova::{self, Limits, OvaError};
use super::ovf::{self, OvfError};
use super::vmdk_check::{self, DiskError, DiskInfo};
use super::vmx::{self, Vmx, VmxError};

/// Kind of source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An OVF descriptor with its files beside it.
    Ovf,
    /// A tar of OVF, manifest and disks.
    Ova,
    /// A VMX with its VMDKs beside it.
    Vmx,
}

impl Format {
    /// From the file extension.
    pub fn detect(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "ovf" => Some(Self::Ovf),
            "ova" => Some(Self::Ova),
            "vmx" => Some(Self::Vmx),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ovf => "ovf",
            Self::Ova => "ova",
            Self::Vmx => "vmx",
        }
    }
}

/// Why a source could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not .ovf, .ova or .vmx.
    #[error("{0}: not an .ovf, .ova or .vmx file")]
    UnknownFormat(PathBuf),
    /// Reading a file failed.
    #[error("{file}: cannot read")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The OVF does not parse.
    #[error("{file}: {source}")]
    Ovf {
        /// The descriptor.
        file: PathBuf,
        /// What is wrong.
        #[source]
        source: OvfError,
    },
    /// The VMX does not parse.
    #[error("{file}: {source}")]
    Vmx {
        /// The descriptor.
        file: PathBuf,
        /// What is wrong.
        #[source]
        source: VmxError,
    },
    /// The OVA does not unpack.
    #[error(transparent)]
    Ova(#[from] OvaError),
    /// A checksum or path problem.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A disk that cannot be converted.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// A gzip-compressed file that does not decompress within its cap.
    #[error(transparent)]
    Gunzip(#[from] GunzipError),
}

/// A disk after inspection.
#[derive(Clone, Debug)]
pub struct LoadedDisk {
    /// Its inspection result; `None` for a raw device mapping declared in the descriptor
    /// and for a new empty disk (no file).
    pub info: Option<DiskInfo>,
}

/// A loaded source.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Its kind.
    pub format: Format,
    /// The descriptor file (inside the extraction directory for an OVA).
    pub descriptor: PathBuf,
    /// The directory its file names are relative to.
    pub root: PathBuf,
    /// The VM.
    pub vm: SourceVm,
    /// One entry per `vm.disks`, same order.
    pub disks: Vec<LoadedDisk>,
    /// Files whose checksum was verified.
    pub verified_files: usize,
    /// Referenced files that no manifest covers.
    pub unverified_files: Vec<String>,
    /// Whether the disks were only inspected from their first bytes (an OVA in a dry run).
    pub shallow: bool,
    /// The OVF deployment option used, when the OVF offers several.
    pub deployment: Option<ovf::DeploymentChoice>,
    /// The OVF's vApp properties (ProductSection).
    pub properties: Vec<ovf::VappProperty>,
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: path.to_owned(),
        source,
    })
}

/// The descriptor's text, the manifest and what an OVA's reading found.
struct Opened {
    descriptor: PathBuf,
    root: PathBuf,
    text: String,
    manifest: Option<(PathBuf, String)>,
    /// Digests computed while unpacking (OVA only).
    digests: Option<BTreeMap<String, (String, String)>>,
    /// First bytes of each file of an OVA read with nothing extracted (dry run).
    heads: Option<BTreeMap<String, Vec<u8>>>,
}

fn open(
    format: Format,
    source: &Path,
    scratch: Option<&Path>,
    limits: Limits,
    opts: &ovf::ParseOptions,
) -> Result<Opened, LoadError> {
    if format == Format::Ova {
        let x = ova::extract(source, scratch, limits, opts)?;
        // Names in messages are "<ova>/<entry>" when nothing was unpacked.
        let root = scratch.map_or_else(|| source.to_owned(), Path::to_owned);
        return Ok(Opened {
            descriptor: root.join(&x.ovf_name),
            manifest: x.manifest.map(|(n, t)| (root.join(n), t)),
            root,
            text: x.ovf_text,
            digests: Some(x.digests),
            heads: scratch.is_none().then_some(x.heads),
        });
    }
    let root = source
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let mf = source.with_extension("mf");
    let manifest = if mf.is_file() {
        let text = read(&mf)?;
        Some((mf, text))
    } else {
        None
    };
    Ok(Opened {
        descriptor: source.to_owned(),
        root,
        text: read(source)?,
        manifest,
        digests: None,
        heads: None,
    })
}

/// Load `source`. An OVA is unpacked into `scratch` (which the caller removes); with no
/// `scratch` (a dry run) nothing is written: an OVA is only read, and its disks are
/// inspected from their first bytes. `opts` are the OVF deployer's choices.
pub fn load(
    source: &Path,
    scratch: Option<&Path>,
    limits: Limits,
    opts: &ovf::ParseOptions,
) -> Result<Loaded, LoadError> {
    let format =
        Format::detect(source).ok_or_else(|| LoadError::UnknownFormat(source.to_owned()))?;
    let opened = open(format, source, scratch, limits, opts)?;
    let Opened {
        descriptor,
        root,
        text,
        manifest,
        digests,
        heads,
    } = opened;
    let mut deployment = None;
    let mut properties = Vec::new();
    // Gzip-compressed files of an OVF beside its descriptor, with their disks' capacity (an
    // OVA's are decompressed while it is unpacked).
    let mut gzipped = BTreeMap::new();
    let (vm, referenced) = match format {
        Format::Ovf | Format::Ova => {
            let pkg = ovf::parse_with(&text, opts).map_err(|source| LoadError::Ovf {
                file: descriptor.clone(),
                source,
            })?;
            let mut names: Vec<String> = pkg.files.iter().map(|f| f.href.clone()).collect();
            names.insert(
                0,
                descriptor
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            if format == Format::Ovf {
                for f in pkg.files.iter() {
                    if f.compression == ovf::Compression::Gzip {
                        gzipped.insert(f.href.clone(), ova::capacity_of(&pkg, &f.href));
                    }
                }
            }
            deployment = pkg.deployment;
            properties = pkg.properties;
            (pkg.vm, names)
        }
        Format::Vmx => {
            let err = |source| LoadError::Vmx {
                file: descriptor.clone(),
                source,
            };
            let keys = Vmx::parse(&text).map_err(err)?;
            let stem = descriptor
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut vm = vmx::to_source_vm(&keys, &stem).map_err(err)?;
            let vmsd = descriptor.with_extension("vmsd");
            if vmsd.is_file() {
                let e = |source| LoadError::Vmx {
                    file: vmsd.clone(),
                    source,
                };
                vm.snapshots =
                    vmx::snapshot_count(&Vmx::parse(&read(&vmsd)?).map_err(e)?).map_err(e)?;
            }
            let names = vm.disks.iter().filter_map(|d| d.file.clone()).collect();
            (vm, names)
        }
    };
    // Checksums before anything else reads the disks.
    let mut covered = BTreeSet::new();
    if let Some((mf, text)) = &manifest {
        for entry in &Manifest::parse(mf, text)?.entries {
            match &digests {
                Some(d) => {
                    let path = bundle::confine(&root, mf, &entry.file)?;
                    let (sha1, sha256) =
                        d.get(&entry.file).ok_or_else(|| BundleError::Missing {
                            descriptor: mf.clone(),
                            name: entry.file.clone(),
                        })?;
                    let actual = if entry.algorithm == Algorithm::Sha1 {
                        sha1
                    } else {
                        sha256
                    };
                    bundle::check_digest(&path, entry, actual.clone())?;
                }
                None => bundle::verify_file(&bundle::resolve(&root, mf, &entry.file)?, entry)?,
            }
            covered.insert(entry.file.clone());
        }
    }
    let manifest_path = manifest.map(|(p, _)| p);
    let unverified_files: Vec<String> = if format == Format::Vmx && manifest_path.is_none() {
        Vec::new() // a VMX set never has a manifest; nothing to report
    } else {
        referenced
            .iter()
            .filter(|n| !covered.contains(*n))
            .cloned()
            .collect()
    };
    let mut disks = Vec::with_capacity(vm.disks.len());
    let mut shallow = heads.is_some();
    for d in &vm.disks {
        let Some(file) = d.file.as_deref().filter(|_| !d.raw_device_mapping) else {
            disks.push(LoadedDisk { info: None });
            continue;
        };
        let info = match (&heads, gzipped.get(file)) {
            (_, Some(capacity)) => {
                let gz = Gzipped {
                    root: &root,
                    descriptor: &descriptor,
                    href: file,
                    capacity: *capacity,
                };
                shallow |= scratch.is_none();
                gz.inspect(scratch, limits)?
            }
            (None, None) => vmdk_check::inspect(&root, &descriptor, file)?,
            (Some(h), None) => vmdk_check::inspect_head(&root, &descriptor, file, h)?,
        };
        disks.push(LoadedDisk { info: Some(info) });
    }
    Ok(Loaded {
        format,
        descriptor,
        root,
        vm,
        disks,
        verified_files: covered.len(),
        unverified_files,
        shallow,
        deployment,
        properties,
    })
}

/// A gzip-compressed disk file of an OVF beside its descriptor.
struct Gzipped<'a> {
    root: &'a Path,
    descriptor: &'a Path,
    href: &'a str,
    capacity: Option<u64>,
}

impl Gzipped<'_> {
    /// Decompress it into `scratch` under its own name and inspect the result; with no
    /// `scratch` (a dry run) decompress to nowhere and inspect its first bytes.
    fn inspect(&self, scratch: Option<&Path>, limits: Limits) -> Result<DiskInfo, LoadError> {
        let src = bundle::resolve(self.root, self.descriptor, self.href)?;
        let file = std::fs::File::open(&src).map_err(|source| LoadError::Read {
            file: src.clone(),
            source,
        })?;
        let (cap, why) = ova::disk_cap(self.capacity, limits);
        let dest = scratch
            .map(|s| bundle::confine(s, self.descriptor, self.href))
            .transpose()?;
        let target = gunzip::Target {
            shown: &src,
            dest: dest.as_deref(),
            cap,
            why: &why,
            head_len: ova::HEAD_BYTES,
        };
        let done = gunzip::gunzip(file, target)?;
        Ok(match scratch {
            Some(s) => {
                let name = self.descriptor.file_name().unwrap_or_default();
                vmdk_check::inspect(s, &s.join(name), self.href)?
            }
            None => {
                let heads = BTreeMap::from([(self.href.to_owned(), done.head)]);
                vmdk_check::inspect_head(self.root, self.descriptor, self.href, &heads)?
            }
        })
    }
}
