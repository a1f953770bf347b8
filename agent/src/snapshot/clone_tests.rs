use super::*;
use crate::snapshot::pins::live_pins;

fn source(base_dir: &Path, mode: CloneMode, size: u64) -> Source {
    Source {
        disk: "root".into(),
        base_dir: base_dir.to_owned(),
        layer: "base".into(),
        file: layout::disk_file(base_dir, "data"),
        mode,
        size,
    }
}

async fn write_pattern(file: &Path, pattern: u8) {
    let out = Command::new("qemu-io")
        .args(["-c", &format!("write -P {pattern:#x} 0 64k")])
        .arg(file)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

async fn reads(file: &Path, pattern: u8) -> bool {
    Command::new("qemu-io")
        .args(["-r", "-c", &format!("read -P {pattern:#x} 0 64k")])
        .arg(file)
        .output()
        .await
        .unwrap()
        .stdout
        .windows(b"Pattern verification failed".len())
        .all(|w| w != b"Pattern verification failed")
}

#[test]
fn qemu_img_progress_is_read_as_whole_percents() {
    assert_eq!(
        last_percent("    (0.00/100%)\r    (12.50/100%)\r"),
        Some(12)
    );
    assert_eq!(last_percent("    (100.00/100%)\r"), Some(100));
    assert_eq!(last_percent("garbage"), None);
    assert_eq!(last_percent("(400/100%)"), None);
}

#[tokio::test]
async fn a_linked_clone_reads_its_base_writes_its_overlay_and_pins_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    let base_dir = layout::vm_dir(state, "tpl").unwrap();
    let clone_dir = layout::vm_dir(state, "cl").unwrap();
    std::fs::create_dir_all(&base_dir).unwrap();
    let base = layout::disk_file(&base_dir, "data");
    crate::storage::qcow2::ensure_blank(&base, 4 << 20)
        .await
        .unwrap();
    write_pattern(&base, 0x41).await;
    let before = std::fs::read(&base).unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let src = source(&base_dir, CloneMode::Linked, 8 << 20);
    assert!(make(&clone_dir, "cl", &src, &tx).await.unwrap());
    assert!(
        !make(&clone_dir, "cl", &src, &tx).await.unwrap(),
        "made once"
    );
    let disk = layout::disk_file(&clone_dir, "root");
    let i = info(&disk).await.unwrap();
    assert_eq!(i.backing_filename.as_deref(), base.to_str());
    assert_eq!(i.virtual_size, 8 << 20);
    assert!(reads(&disk, 0x41).await);
    write_pattern(&disk, 0x42).await;
    assert!(reads(&disk, 0x42).await && reads(&base, 0x41).await);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        before,
        "the base is never written"
    );
    assert_eq!(live_pins(state, &base_dir).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_copy_stands_alone_and_leaves_no_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    let base_dir = layout::vm_dir(state, "tpl").unwrap();
    let clone_dir = layout::vm_dir(state, "cl").unwrap();
    std::fs::create_dir_all(&base_dir).unwrap();
    let base = layout::disk_file(&base_dir, "data");
    crate::storage::qcow2::ensure_blank(&base, 4 << 20)
        .await
        .unwrap();
    write_pattern(&base, 0x43).await;
    let (tx, rx) = tokio::sync::watch::channel(0);
    make(
        &clone_dir,
        "cl",
        &source(&base_dir, CloneMode::Full, 4 << 20),
        &tx,
    )
    .await
    .unwrap();
    let disk = layout::disk_file(&clone_dir, "root");
    assert_eq!(info(&disk).await.unwrap().backing_filename, None);
    assert!(reads(&disk, 0x43).await);
    assert_eq!(*rx.borrow(), 100);
    assert!(live_pins(state, &base_dir).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_clone_smaller_than_its_source_is_refused_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let base_dir = layout::vm_dir(tmp.path(), "tpl").unwrap();
    std::fs::create_dir_all(&base_dir).unwrap();
    crate::storage::qcow2::ensure_blank(&layout::disk_file(&base_dir, "data"), 4 << 20)
        .await
        .unwrap();
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let clone_dir = layout::vm_dir(tmp.path(), "cl").unwrap();
    let err = make(
        &clone_dir,
        "cl",
        &source(&base_dir, CloneMode::Linked, 1 << 20),
        &tx,
    )
    .await
    .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(!layout::disk_file(&clone_dir, "root").exists());
}
