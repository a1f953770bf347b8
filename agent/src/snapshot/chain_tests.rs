use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

#[test]
fn a_snapshot_freezes_the_active_layer_and_writes_go_to_a_new_one() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    assert_eq!(t.active(), "l1");
    assert_eq!(t.layer_of("s1"), Some(ROOT));
    assert_eq!(t.chain("l1"), ["l1", ROOT]);
    assert_eq!(t.next_step(), None);
}

#[test]
fn taking_the_same_snapshot_twice_changes_nothing() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    let before = t.clone();
    t.snapshot("s1", "l1").unwrap();
    assert_eq!(t, before);
}

#[test]
fn deleting_a_middle_snapshot_merges_its_layer_and_shortens_the_chain() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    t.snapshot("s2", "l2").unwrap();
    t.snapshot("s3", "l3").unwrap();
    assert_eq!(t.chain("l3").len(), 4);
    t.forget("s2");
    // s2 owned l1; l1's only child l2 (owned by s3) is committed down into l1.
    assert_eq!(
        t.next_step(),
        Some(Step::Merge {
            child: "l2".into(),
            into: "l1".into()
        })
    );
    assert!(t.is_online(&t.next_step().unwrap()));
    t.settle();
    assert_eq!(t.chain("l3"), ["l3", "l1", ROOT]);
    assert_eq!(t.layer_of("s3"), Some("l1"));
}

#[test]
fn deleting_the_newest_snapshot_commits_the_active_layer_down() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    t.forget("s1");
    assert_eq!(
        t.settle(),
        [Step::Merge {
            child: "l1".into(),
            into: ROOT.into()
        }]
    );
    assert_eq!(t, Tree::new());
}

#[test]
fn a_restore_branches_and_every_other_snapshot_stays_restorable() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    t.snapshot("s2", "l2").unwrap();
    t.restore("s1", "r1").unwrap();
    // The old active layer l2 is thrown away; s2's layer l1 stays, with no child now.
    assert_eq!(t.settle(), [Step::Remove { layer: "l2".into() }]);
    assert_eq!(t.chain("r1"), ["r1", ROOT]);
    assert_eq!(t.layer_of("s2"), Some("l1"));
    assert_eq!(t.children(ROOT), ["l1", "r1"]);
    t.restore("s2", "r2").unwrap();
    t.settle();
    assert_eq!(t.chain("r2"), ["r2", "l1", ROOT]);
}

#[test]
fn a_shared_layer_waits_until_the_tree_allows_a_merge() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    t.snapshot("s2", "l2").unwrap();
    t.restore("s1", "r1").unwrap();
    t.settle();
    t.forget("s1");
    // The root has two children (l1 of s2, and the active r1): it cannot be merged.
    assert_eq!(t.next_step(), None);
    t.forget("s2");
    assert_eq!(
        t.settle(),
        [
            Step::Remove { layer: "l1".into() },
            Step::Merge {
                child: "r1".into(),
                into: ROOT.into()
            }
        ]
    );
    assert_eq!(t, Tree::new());
}

#[test]
fn a_merge_off_the_running_chain_is_offline() {
    let mut t = Tree::new();
    t.snapshot("s1", "l1").unwrap();
    t.snapshot("s2", "l2").unwrap();
    t.snapshot("s3", "l3").unwrap();
    t.restore("s1", "r1").unwrap();
    t.settle();
    t.forget("s2");
    let step = t.next_step().unwrap();
    assert_eq!(
        step,
        Step::Merge {
            child: "l2".into(),
            into: "l1".into()
        }
    );
    assert!(!t.is_online(&step));
}

#[test]
fn restoring_an_unknown_snapshot_is_refused() {
    let mut t = Tree::new();
    assert_eq!(
        t.restore("nope", "r"),
        Err(ChainError::UnknownSnapshot("nope".into()))
    );
}

#[test]
fn the_snapshot_limit_is_enforced() {
    let mut t = Tree::new();
    for i in 0..MAX_SNAPSHOTS {
        t.snapshot(&format!("s{i}"), &format!("l{i}")).unwrap();
    }
    assert_eq!(t.snapshot("one-more", "lx"), Err(ChainError::TooMany));
}

#[test]
fn damaged_trees_are_refused() {
    let layer = |p: Option<&str>| Layer {
        parent: p.map(str::to_owned),
        owner: None,
    };
    let orphan = BTreeMap::from([
        (ROOT.to_owned(), layer(None)),
        ("a".to_owned(), layer(Some("gone"))),
    ]);
    assert!(Tree::from_layers(orphan, "a").is_err());
    let cycle = BTreeMap::from([
        (ROOT.to_owned(), layer(None)),
        ("a".to_owned(), layer(Some("b"))),
        ("b".to_owned(), layer(Some("a"))),
    ]);
    assert!(Tree::from_layers(cycle, ROOT).is_err());
    let second_root = BTreeMap::from([
        (ROOT.to_owned(), layer(None)),
        ("a".to_owned(), layer(None)),
    ]);
    assert!(Tree::from_layers(second_root, ROOT).is_err());
    let fine = BTreeMap::from([(ROOT.to_owned(), layer(None))]);
    assert!(Tree::from_layers(fine.clone(), "missing").is_err());
    assert_eq!(Tree::from_layers(fine, ROOT).unwrap(), Tree::new());
}

/// What a guest would read: a layer's blocks over its parent's.
#[derive(Default)]
struct Disk {
    data: BTreeMap<String, BTreeMap<u8, u32>>,
}

impl Disk {
    fn view(&self, t: &Tree, id: &str) -> BTreeMap<u8, u32> {
        let mut out = BTreeMap::new();
        for l in t.chain(id).iter().rev() {
            out.extend(self.data.get(l).cloned().unwrap_or_default());
        }
        out
    }

    /// What the agent does to the files for a step.
    fn carry_out(&mut self, step: &Step) {
        match step {
            Step::Remove { layer } => {
                self.data.remove(layer);
            }
            Step::Merge { child, into } => {
                let moved = self.data.remove(child).unwrap_or_default();
                self.data.entry(into.clone()).or_default().extend(moved);
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u8, u32),
    Snapshot,
    Restore(usize),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..8, any::<u32>()).prop_map(|(b, v)| Op::Write(b, v)),
        2 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Restore),
        2 => any::<usize>().prop_map(Op::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever the order of writes, snapshots, restores and deletes: every snapshot reads
    /// what the disk held when it was taken, the VM reads what it wrote since (or since the
    /// restore), and the tree keeps only layers someone needs.
    #[test]
    fn every_snapshot_and_the_vm_keep_their_data_and_the_tree_stays_small(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut t = Tree::new();
        let mut disk = Disk::default();
        let mut expected: BTreeMap<String, BTreeMap<u8, u32>> = BTreeMap::new();
        let mut current: BTreeMap<u8, u32> = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write(b, v) => {
                    disk.data.entry(t.active().to_owned()).or_default().insert(b, v);
                    current.insert(b, v);
                }
                Op::Snapshot => {
                    let s = format!("s{n}");
                    if t.snapshot(&s, &format!("l{n}")).is_ok() {
                        expected.insert(s, current.clone());
                    }
                }
                Op::Restore(i) if !expected.is_empty() => {
                    let (s, view) = expected.iter().nth(i % expected.len()).unwrap();
                    t.restore(s, &format!("r{n}")).unwrap();
                    current = view.clone();
                }
                Op::Delete(i) if !expected.is_empty() => {
                    let s = expected.keys().nth(i % expected.len()).unwrap().clone();
                    t.forget(&s);
                    expected.remove(&s);
                }
                Op::Restore(_) | Op::Delete(_) => {}
            }
            while let Some(step) = t.next_step() {
                disk.carry_out(&step);
                t.apply(&step);
            }
            for (s, view) in &expected {
                let layer = t.layer_of(s).expect("a kept snapshot has a layer");
                prop_assert_eq!(&disk.view(&t, layer), view, "snapshot {}", s);
            }
            prop_assert_eq!(&disk.view(&t, t.active()), &current);
            prop_assert!(t.layers().len() <= 2 * expected.len() + 1);
            prop_assert!(t.chain(t.active()).len() <= expected.len() + 1);
            for (id, l) in t.layers() {
                prop_assert!(
                    l.owner.is_some() || id == t.active() || t.children(id).len() >= 2,
                    "layer {} is kept for nobody", id
                );
            }
            let rebuilt = Tree::from_layers(t.layers().clone(), t.active());
            prop_assert_eq!(rebuilt.as_ref(), Ok(&t));
        }
    }
}

#[test]
fn a_pinned_layer_and_everything_below_it_stay_as_they_are() {
    let mut t = Tree::new();
    t.snapshot("a", "l1").unwrap();
    t.snapshot("b", "l2").unwrap();
    // A linked clone reads b's layer (l1), hence the root below it too.
    t.pin("l1");
    assert!(t.is_frozen("l1") && t.is_frozen(ROOT) && !t.is_frozen("l2"));
    t.forget("a");
    t.forget("b");
    // Unpinned, both deletes would merge; pinned, nothing below l1 may change.
    let steps = t.settle();
    assert!(
        steps.iter().all(|s| match s {
            Step::Remove { layer } => layer != "l1" && layer != ROOT,
            Step::Merge { into, .. } => into != "l1" && into != ROOT,
        }),
        "{steps:?}"
    );
    assert!(t.layers().contains_key("l1") && t.layers().contains_key(ROOT));
    assert_eq!(t.chain(t.active()), ["l2", "l1", ROOT]);
    t.pin("not-a-layer");
    assert!(!t.is_frozen("not-a-layer"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Whatever happens to the VM after a linked clone pins a snapshot's layer, no layer the
    /// clone reads is ever written or removed, and the VM keeps its own data.
    #[test]
    fn layers_under_a_linked_clone_are_never_written_or_removed(
        ops in proptest::collection::vec(op(), 1..50),
        pin_at in 0usize..50,
    ) {
        let mut t = Tree::new();
        let mut disk = Disk::default();
        let mut snaps: Vec<String> = Vec::new();
        let mut current: BTreeMap<u8, u32> = BTreeMap::new();
        let mut frozen: BTreeMap<String, BTreeMap<u8, u32>> = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            if n == pin_at
                && frozen.is_empty()
                && let Some(layer) = snaps.last().and_then(|s| t.layer_of(s)).map(str::to_owned)
            {
                t.pin(&layer);
                for l in t.chain(&layer) {
                    frozen.insert(l.clone(), disk.data.get(&l).cloned().unwrap_or_default());
                }
            }
            match op {
                Op::Write(b, v) => {
                    disk.data.entry(t.active().to_owned()).or_default().insert(b, v);
                    current.insert(b, v);
                }
                Op::Snapshot => {
                    let s = format!("s{n}");
                    if t.snapshot(&s, &format!("l{n}")).is_ok() {
                        snaps.push(s);
                    }
                }
                Op::Restore(i) if !snaps.is_empty() => {
                    let s = snaps[i % snaps.len()].clone();
                    if t.layer_of(&s).is_some() {
                        t.restore(&s, &format!("r{n}")).unwrap();
                        current = disk.view(&t, t.active());
                    }
                }
                Op::Delete(i) if !snaps.is_empty() => {
                    let s = snaps.remove(i % snaps.len());
                    t.forget(&s);
                }
                Op::Restore(_) | Op::Delete(_) => {}
            }
            while let Some(step) = t.next_step() {
                disk.carry_out(&step);
                t.apply(&step);
            }
            prop_assert_eq!(&disk.view(&t, t.active()), &current);
            for (l, data) in &frozen {
                prop_assert!(t.layers().contains_key(l), "frozen layer {} removed", l);
                prop_assert_eq!(&disk.data.get(l).cloned().unwrap_or_default(), data, "layer {} written", l);
            }
        }
    }
}
