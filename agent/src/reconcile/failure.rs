//! Which host-side failures a VM's status shows, and in what words: a domain libvirt would
//! not define, a guest QEMU would not start, storage that could not be prepared. These are
//! retried with backoff and reported (Ready=False, a Warning Event) rather than only logged.
//!
//! Pure: classification and wording only. A broken libvirt connection is not the VM's
//! failure (the host's health reports it), so it stays an error of the reconcile.

use super::status::Failure;
use crate::hypervisor::HvError;
use crate::seed::SeedError;
use crate::storage::prepare::StorageError;

/// What was being done when the VM failed; a fixed set, also the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// libvirt refused the domain definition.
    Define,
    /// libvirt or QEMU could not start the guest.
    Start,
    /// Disks, images or the seed could not be prepared.
    Storage,
}

/// Every kind, so each metric series exists from the start.
pub const ALL_KINDS: [FailureKind; 3] = [
    FailureKind::Define,
    FailureKind::Start,
    FailureKind::Storage,
];

impl FailureKind {
    /// The Ready condition's reason and the status column.
    pub fn reason(self) -> &'static str {
        match self {
            FailureKind::Define => "DefineFailed",
            FailureKind::Start => "StartFailed",
            FailureKind::Storage => "StorageFailed",
        }
    }

    /// The metrics label value.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Define => "define",
            FailureKind::Start => "start",
            FailureKind::Storage => "storage",
        }
    }

    fn what(self) -> &'static str {
        match self {
            FailureKind::Define => "libvirt refused the domain definition",
            FailureKind::Start => "the guest could not be started",
            FailureKind::Storage => "the VM's storage could not be prepared",
        }
    }
}

/// Longest message kept in the status (QEMU's command-line echoes can be long).
const MAX_MESSAGE: usize = 2048;

/// The failure a libvirt error means for the VM, or `None` when the connection itself is
/// broken (a host problem, retried as a reconcile error).
pub fn from_hypervisor(kind: FailureKind, e: &HvError) -> Option<Failure> {
    match e {
        HvError::Libvirt {
            message,
            connection: false,
            ..
        } => Some(failure(kind, message)),
        HvError::NotFound(_) => Some(failure(kind, &e.to_string())),
        HvError::Libvirt { .. } | HvError::Connect { .. } | HvError::Join(_) => None,
    }
}

/// The failure a transient storage error means for the VM.
pub fn from_storage(e: &StorageError) -> Failure {
    failure(FailureKind::Storage, &chain(e))
}

/// The failure a seed that could not be written means for the VM.
pub fn from_seed(e: &SeedError) -> Failure {
    failure(FailureKind::Storage, &chain(e))
}

fn failure(kind: FailureKind, detail: &str) -> Failure {
    let detail = one_wording(&strip_timestamps(detail));
    let mut message = format!("{}: {}", kind.what(), detail.trim());
    if detail.contains("Permission denied") {
        message.push_str(
            " (QEMU runs as an unprivileged user, libvirt-qemu on Debian: every directory on \
             the path to the VM's files must be traversable by it, e.g. mode 0755)",
        );
    }
    Failure {
        reason: kind.reason(),
        message: truncate(message, MAX_MESSAGE),
        retried: true,
    }
}

/// An error and its sources, joined as `outer: inner` (our messages never repeat their
/// source, so nothing shows twice).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

/// Remove QEMU's log timestamps (`2026-11-30T01:50:12.345678Z `), which libvirt copies into
/// its error text: the same failure must read the same each time, so it is reported once.
pub fn strip_timestamps(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(len) = timestamp_len(rest) {
            rest = rest[len..].trim_start_matches(' ');
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// How libvirt words "QEMU exited while starting": which one it picks depends on whether QEMU
/// died before or after libvirt connected to its monitor, a race that differs between two
/// retries of the very same failure.
const QEMU_EXIT_WORDINGS: [&str; 3] = [
    "process exited while connecting to monitor: ",
    "qemu unexpectedly closed the monitor: ",
    "QEMU unexpectedly closed the monitor: ",
];

/// libvirt's wrapper around QEMU's own words, in one wording, so that the same failure reads
/// the same on every retry and is announced once.
fn one_wording(s: &str) -> String {
    QEMU_EXIT_WORDINGS.iter().fold(s.to_owned(), |acc, w| {
        acc.replace(w, "QEMU exited while starting: ")
    })
}

/// The length of an RFC 3339 UTC timestamp at the start of `s`.
fn timestamp_len(s: &str) -> Option<usize> {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd";
    let b = s.as_bytes();
    if b.len() < SHAPE.len() {
        return None;
    }
    for (c, want) in b.iter().zip(SHAPE) {
        let ok = match want {
            b'd' => c.is_ascii_digit(),
            w => c == w,
        };
        if !ok {
            return None;
        }
    }
    let mut len = SHAPE.len();
    if b.get(len) == Some(&b'.') {
        len += 1;
        while b.get(len).is_some_and(u8::is_ascii_digit) {
            len += 1;
        }
    }
    (b.get(len) == Some(&b'Z')).then_some(len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: &str = "internal error: process exited while connecting to monitor: \
        2026-11-30T01:50:12.345678Z qemu-system-x86_64: -drive file=/var/tmp/s/vms/u/seed.iso,\
        format=raw,if=none,id=drive-sata0-0-1,readonly=on: Could not open \
        '/var/tmp/s/vms/u/seed.iso': Permission denied";

    fn libvirt(message: &str, connection: bool) -> HvError {
        HvError::Libvirt {
            op: "start",
            message: message.into(),
            connection,
        }
    }

    #[test]
    fn a_start_qemu_refused_keeps_qemus_words_without_the_timestamp_and_names_the_remedy() {
        let f = from_hypervisor(FailureKind::Start, &libvirt(QEMU, false)).expect("a failure");
        assert_eq!(f.reason, "StartFailed");
        assert!(
            f.message.starts_with(
                "the guest could not be started: internal error: QEMU exited while \
                 starting: qemu-system-x86_64: -drive"
            ),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("Could not open '/var/tmp/s/vms/u/seed.iso': Permission denied")
        );
        assert!(f.message.contains("traversable"), "{}", f.message);
        let again = libvirt(&QEMU.replace("01:50:12.345678", "01:50:44.000001"), false);
        assert_eq!(
            from_hypervisor(FailureKind::Start, &again),
            Some(f.clone()),
            "the same failure reads the same on every retry"
        );
        // libvirt words the same exit another way when QEMU dies before the monitor opens.
        let raced = libvirt(
            &QEMU.replace(
                "process exited while connecting to monitor",
                "qemu unexpectedly closed the monitor",
            ),
            false,
        );
        assert_eq!(
            from_hypervisor(FailureKind::Start, &raced),
            Some(f),
            "either wording of the same exit reads the same"
        );
    }

    #[test]
    fn a_broken_connection_is_not_the_vms_failure() {
        assert_eq!(
            from_hypervisor(FailureKind::Start, &libvirt("end of file", true)),
            None
        );
        let connect = HvError::Connect {
            uri: "qemu:///system".into(),
            message: "no socket".into(),
        };
        assert_eq!(from_hypervisor(FailureKind::Define, &connect), None);
    }

    #[test]
    fn a_refused_definition_is_define_failed() {
        let f = from_hypervisor(
            FailureKind::Define,
            &libvirt("unsupported configuration: bad", false),
        )
        .unwrap();
        assert_eq!(f.reason, "DefineFailed");
        assert_eq!(
            f.message,
            "libvirt refused the domain definition: unsupported configuration: bad"
        );
    }

    #[test]
    fn a_storage_failure_names_its_cause() {
        let e = StorageError::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "No space left on device",
        ));
        let f = from_storage(&e);
        assert_eq!(f.reason, "StorageFailed");
        assert_eq!(
            f.message,
            "the VM's storage could not be prepared: cannot create the VM directory: No space left on device"
        );
        let seed = from_seed(&SeedError::Tool("exit 1".into()));
        assert_eq!(seed.reason, "StorageFailed");
        assert!(seed.message.ends_with("genisoimage failed: exit 1"));
    }

    #[test]
    fn timestamps_are_removed_only_where_they_are_whole() {
        assert_eq!(strip_timestamps("a 2026-01-02T03:04:05Z b"), "a b");
        assert_eq!(strip_timestamps("2026-01-02T03:04:05.5Zx"), "x");
        assert_eq!(
            strip_timestamps("2026-01-02 03:04:05 and 2026-01-02T03:04"),
            "2026-01-02 03:04:05 and 2026-01-02T03:04"
        );
        assert_eq!(strip_timestamps("é 2026-01-02T03:04:05Z"), "é ");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = truncate("é".repeat(10), 8);
        assert_eq!(s, "éé...");
        assert_eq!(truncate("short".into(), 8), "short");
        let f = from_hypervisor(FailureKind::Start, &libvirt(&"x".repeat(10_000), false)).unwrap();
        assert!(f.message.len() <= MAX_MESSAGE);
    }

    #[test]
    fn every_kind_has_its_own_reason_and_label() {
        let reasons: std::collections::HashSet<_> = ALL_KINDS.iter().map(|k| k.reason()).collect();
        let labels: std::collections::HashSet<_> = ALL_KINDS.iter().map(|k| k.label()).collect();
        assert_eq!((reasons.len(), labels.len()), (3, 3));
    }
}
