use std::path::PathBuf;

use super::*;
use crate::host::facts::Ownership;

fn qemu() -> QemuUser {
    QemuUser {
        name: "libvirt-qemu".into(),
        uid: 64055,
        gids: vec![107, 64055],
    }
}

fn own(mode: u32, gid: u32, group: &str) -> Ownership {
    Ownership {
        uid: 0,
        gid,
        mode,
        owner: "root".into(),
        group: group.into(),
    }
}

/// `/`, `/tmp` (1777), `/tmp/tmp.x` with `mode`, then `/tmp/tmp.x/state` (0755).
fn under_tmpdir(mode: u32, gid: u32, group: &str) -> DirFacts {
    DirFacts {
        path: "/tmp/tmp.x/state".into(),
        exists: true,
        free_bytes: Ok(80 * GIB),
        components: vec![
            (PathBuf::from("/"), own(0o755, 0, "root")),
            (PathBuf::from("/tmp"), own(0o1777, 0, "root")),
            (PathBuf::from("/tmp/tmp.x"), own(mode, gid, group)),
            (PathBuf::from("/tmp/tmp.x/state"), own(0o755, 0, "root")),
        ],
        blocked: None,
    }
}

#[test]
fn a_root_only_directory_on_the_path_fails_with_the_chmod_that_fixes_it() {
    let u = qemu();
    let c = access("state-dir-access", &under_tmpdir(0o700, 0, "root"), Ok(&u));
    assert_eq!(c.status, Status::Fail);
    assert_eq!(
        c.finding,
        "libvirt-qemu cannot search /tmp/tmp.x (drwx------ root root): QEMU cannot open files \
         under /tmp/tmp.x/state"
    );
    assert!(
        c.remedy
            .unwrap()
            .starts_with("chmod o+x /tmp/tmp.x (or give libvirt-qemu")
    );
}

#[test]
fn group_search_permission_is_enough_when_qemu_is_in_the_group() {
    let u = qemu();
    let c = access(
        "images-dir-access",
        &under_tmpdir(0o710, 107, "kvm"),
        Ok(&u),
    );
    assert_eq!(c.status, Status::Pass, "{c:?}");
    assert_eq!(c.finding, "libvirt-qemu can reach /tmp/tmp.x/state");
    let other_group = access("images-dir-access", &under_tmpdir(0o710, 5, "tty"), Ok(&u));
    assert_eq!(other_group.status, Status::Fail);
}

#[test]
fn a_directory_that_does_not_exist_yet_is_judged_by_its_existing_ancestors() {
    let u = qemu();
    let mut f = under_tmpdir(0o755, 0, "root");
    f.components.pop();
    f.exists = false;
    let c = access("state-dir-access", &f, Ok(&u));
    assert_eq!(c.status, Status::Pass);
    assert!(c.finding.ends_with("(the agent creates the rest)"));
    let s = space("state-dir-space", &f, STATE_LIMITS);
    assert_eq!(
        s.finding,
        "80.0 GiB free under /tmp/tmp.x (/tmp/tmp.x/state does not exist yet)"
    );
}

#[test]
fn a_file_in_the_way_fails() {
    let u = qemu();
    let mut f = under_tmpdir(0o755, 0, "root");
    f.blocked = Some(("/tmp/tmp.x".into(), "not a directory".into()));
    let c = access("state-dir-access", &f, Ok(&u));
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.finding, "/tmp/tmp.x: not a directory");
}

#[test]
fn free_space_is_judged_against_the_thresholds() {
    let mut f = under_tmpdir(0o755, 0, "root");
    assert_eq!(
        space("images-dir-space", &f, IMAGES_LIMITS).status,
        Status::Pass
    );
    f.free_bytes = Ok(10 * GIB);
    let warn = space("images-dir-space", &f, IMAGES_LIMITS);
    assert_eq!(warn.status, Status::Warn);
    assert_eq!(
        warn.finding,
        "10.0 GiB free under /tmp/tmp.x/state (needs 5.0 GiB, 20.0 GiB recommended)"
    );
    f.free_bytes = Ok(GIB);
    assert_eq!(
        space("images-dir-space", &f, IMAGES_LIMITS).status,
        Status::Fail
    );
    assert_eq!(
        space("state-dir-space", &f, STATE_LIMITS).status,
        Status::Warn
    );
    f.free_bytes = Err("Permission denied".into());
    assert_eq!(
        space("state-dir-space", &f, STATE_LIMITS).status,
        Status::Warn
    );
}
