//! The words a VM's status uses for an image the host refused or cannot hold yet: the
//! Ready reason, the ImagesReady reason and the metrics label. Pure classification.

use crate::storage::cache::DownloadError;
use crate::storage::prepare::StorageError;
use crate::storage::qcow2::Qcow2Error;

/// Why an image was refused; a fixed set, also the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageRefusal {
    /// The host's image cache is full of images in use (retried).
    CacheFull,
    /// The image is larger than the disk's declared size.
    LargerThanDisk,
    /// The image's format, backing file or data file is refused.
    Format,
}

/// Every refusal, so each metric series exists from the start.
pub const ALL_REFUSALS: [ImageRefusal; 3] = [
    ImageRefusal::CacheFull,
    ImageRefusal::LargerThanDisk,
    ImageRefusal::Format,
];

impl ImageRefusal {
    /// The metrics label value.
    pub fn label(self) -> &'static str {
        match self {
            ImageRefusal::CacheFull => "cache_full",
            ImageRefusal::LargerThanDisk => "larger_than_disk",
            ImageRefusal::Format => "format",
        }
    }
}

/// How a permanent storage error shows: the Ready reason, the ImagesReady reason when it
/// is about an image, and the refusal to count.
pub fn permanent(e: &StorageError) -> (&'static str, Option<&'static str>, Option<ImageRefusal>) {
    match e {
        StorageError::Download(DownloadError::Checksum { .. }) => {
            ("ImageChecksumMismatch", Some("ChecksumMismatch"), None)
        }
        StorageError::Download(DownloadError::Refused(_)) => {
            ("ImageRefused", Some("DownloadRefused"), None)
        }
        StorageError::Download(DownloadError::TooLarge { .. }) => {
            ("ImageTooLarge", Some("TooLarge"), None)
        }
        StorageError::Download(DownloadError::Format(_))
        | StorageError::Disk {
            source: Qcow2Error::Unsupported(_),
            ..
        } => (
            "ImageRefused",
            Some("UnsupportedImage"),
            Some(ImageRefusal::Format),
        ),
        StorageError::Download(_) => ("ImageChecksumMismatch", Some("InvalidDigest"), None),
        StorageError::Path(_) => ("StorageFailed", Some("ImageUnavailable"), None),
        StorageError::Disk {
            source: Qcow2Error::TooSmall { .. },
            ..
        } => (
            "ImageLargerThanDisk",
            Some("ImageLargerThanDisk"),
            Some(ImageRefusal::LargerThanDisk),
        ),
        _ => ("StorageFailed", None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_larger_than_its_disk_names_both_figures() {
        let e = StorageError::Disk {
            disk: "root".into(),
            source: Qcow2Error::TooSmall {
                requested: 1 << 20,
                image: 3 << 20,
            },
        };
        assert_eq!(
            permanent(&e),
            (
                "ImageLargerThanDisk",
                Some("ImageLargerThanDisk"),
                Some(ImageRefusal::LargerThanDisk)
            )
        );
        let m = e.to_string();
        assert!(
            m.contains("1048576") && m.contains("3145728") && m.contains("root"),
            "{m}"
        );
    }

    #[test]
    fn labels_are_distinct() {
        let mut l: Vec<_> = ALL_REFUSALS.iter().map(|r| r.label()).collect();
        l.dedup();
        assert_eq!(l.len(), 3);
    }
}
