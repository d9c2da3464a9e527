//! The contract every [`Store`] backend must meet. A backend's tests call [`suite`] with a
//! factory that returns a fresh, empty store (and whatever keeps it alive, e.g. a temp dir).

use std::sync::Arc;

use super::{Store, StoreError, StoreExt, Tree, TxResult, Txn, WriteBatch};

type Case = (&'static str, fn(&dyn Store));

pub fn suite<S, G, F>(make: F)
where
    S: Store + 'static,
    F: Fn() -> (S, G),
{
    let cases: &[Case] = &[
        ("point operations", point_operations),
        ("trees are separate keyspaces", trees_are_separate),
        ("prefix scans are ordered, bounded and pageable", prefix_scans),
        ("batches apply atomically across trees", batches),
        ("transactions read their writes and commit", |s| {
            commits(s, &|f| s.transaction(f))
        }),
        ("an aborted transaction leaves nothing behind", |s| {
            aborts(s, &|f| s.transaction(f))
        }),
        ("buffered writes read their own and commit whole", |s| {
            commits(s, &|f| super::write_buffered(s, &WriteBatch::default(), f))
        }),
        ("failed buffered writes leave nothing behind", |s| {
            aborts(s, &|f| super::write_buffered(s, &WriteBatch::default(), f))
        }),
        (
            "typed records round-trip and corruption is reported",
            typed_records,
        ),
        ("scan_all pages through everything under a prefix", scan_all_pages),
    ];
    for (name, case) in cases {
        let (store, _guard) = make();
        eprintln!("store conformance [{}]: {name}", store.backend());
        case(&store);
        store.flush().unwrap();
    }
    let (store, _guard) = make();
    concurrent_transactions_are_isolated(Arc::new(store));
    let (store, _guard) = make();
    concurrent_batches_all_land_whole_and_in_order(Arc::new(store));
}

fn point_operations(s: &dyn Store) {
    assert_eq!(s.get(Tree::Scratch, b"k").unwrap(), None);
    s.put(Tree::Scratch, b"k", b"v1").unwrap();
    assert_eq!(s.get(Tree::Scratch, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    s.put(Tree::Scratch, b"k", b"v2").unwrap();
    assert_eq!(s.get(Tree::Scratch, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    s.put(Tree::Scratch, b"", b"empty key").unwrap();
    assert_eq!(
        s.get(Tree::Scratch, b"").unwrap().as_deref(),
        Some(&b"empty key"[..])
    );
    assert!(s.delete(Tree::Scratch, b"k").unwrap());
    assert!(!s.delete(Tree::Scratch, b"k").unwrap());
    assert_eq!(s.get(Tree::Scratch, b"k").unwrap(), None);
}

fn trees_are_separate(s: &dyn Store) {
    s.put(Tree::Meta, b"same", b"meta").unwrap();
    s.put(Tree::Scratch, b"same", b"scratch").unwrap();
    assert_eq!(s.get(Tree::Meta, b"same").unwrap().as_deref(), Some(&b"meta"[..]));
    assert_eq!(s.scan_prefix(Tree::Scratch, b"", None, 10).unwrap().len(), 1);
    s.delete(Tree::Meta, b"same").unwrap();
    assert_eq!(
        s.get(Tree::Scratch, b"same").unwrap().as_deref(),
        Some(&b"scratch"[..])
    );
}

fn prefix_scans(s: &dyn Store) {
    for key in [&b"a"[..], b"ab", b"ab\xff", b"abc", b"b", b"a\x00"] {
        s.put(Tree::Scratch, key, key).unwrap();
    }
    s.put(Tree::Meta, b"ab-other-tree", b"x").unwrap();
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(s.scan_prefix(Tree::Scratch, b"ab", None, 100).unwrap()),
        vec![b"ab".to_vec(), b"abc".to_vec(), b"ab\xff".to_vec()],
        "bytewise order"
    );
    assert_eq!(s.scan_prefix(Tree::Scratch, b"", None, 100).unwrap().len(), 6);
    assert_eq!(
        keys(s.scan_prefix(Tree::Scratch, b"a", None, 2).unwrap()),
        vec![b"a".to_vec(), b"a\x00".to_vec()]
    );
    assert_eq!(
        keys(s.scan_prefix(Tree::Scratch, b"a", Some(b"a\x00"), 2).unwrap()),
        vec![b"ab".to_vec(), b"abc".to_vec()]
    );
    assert!(
        s.scan_prefix(Tree::Scratch, b"a", Some(b"ab\xff"), 10)
            .unwrap()
            .is_empty()
    );
    assert!(s.scan_prefix(Tree::Scratch, b"zz", None, 10).unwrap().is_empty());
    let (k, v) = &s.scan_prefix(Tree::Scratch, b"b", None, 10).unwrap()[0];
    assert_eq!((k.as_slice(), v.as_slice()), (&b"b"[..], &b"b"[..]));
}

fn batches(s: &dyn Store) {
    s.put(Tree::Scratch, b"gone", b"x").unwrap();
    let mut batch = WriteBatch::default();
    batch.put(Tree::Meta, b"m", b"1".to_vec());
    batch.put(Tree::Scratch, b"s", b"2".to_vec());
    batch.delete(Tree::Scratch, b"gone");
    batch.put(Tree::Scratch, b"s", b"3".to_vec());
    s.apply(batch).unwrap();
    assert_eq!(s.get(Tree::Meta, b"m").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        s.get(Tree::Scratch, b"s").unwrap().as_deref(),
        Some(&b"3"[..]),
        "last write wins"
    );
    assert_eq!(s.get(Tree::Scratch, b"gone").unwrap(), None);
    s.apply(WriteBatch::default()).unwrap();
}

/// A transaction, or anything that runs a closure over a `Txn` and writes what it wrote.
type RunTxn<'a> = dyn Fn(&dyn Fn(&dyn Txn) -> TxResult) -> Result<(), StoreError> + 'a;

fn commits(s: &dyn Store, run: &RunTxn<'_>) {
    s.put(Tree::Scratch, b"old", b"o").unwrap();
    run(&|tx| {
        assert_eq!(tx.get(Tree::Scratch, b"new")?, None);
        tx.put(Tree::Scratch, b"new", b"n")?;
        assert_eq!(tx.get(Tree::Scratch, b"new")?.as_deref(), Some(&b"n"[..]));
        tx.delete(Tree::Scratch, b"old")?;
        assert_eq!(tx.get(Tree::Scratch, b"old")?, None);
        tx.put(Tree::Meta, b"other tree", b"t")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(s.get(Tree::Scratch, b"new").unwrap().as_deref(), Some(&b"n"[..]));
    assert_eq!(s.get(Tree::Scratch, b"old").unwrap(), None);
    assert_eq!(
        s.get(Tree::Meta, b"other tree").unwrap().as_deref(),
        Some(&b"t"[..])
    );
}

fn aborts(s: &dyn Store, run: &RunTxn<'_>) {
    s.put(Tree::Scratch, b"keep", b"k").unwrap();
    let err = run(&|tx| {
        tx.put(Tree::Scratch, b"half", b"h")?;
        tx.delete(Tree::Scratch, b"keep")?;
        Err(StoreError::Aborted("business rule".into()))
    })
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Aborted(r) if r == "business rule"),
        "{err:?}"
    );
    assert_eq!(s.get(Tree::Scratch, b"half").unwrap(), None);
    assert_eq!(s.get(Tree::Scratch, b"keep").unwrap().as_deref(), Some(&b"k"[..]));
}

fn typed_records(s: &dyn Store) {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Rec {
        name: String,
        n: u64,
    }
    let rec = Rec {
        name: "x".into(),
        n: 7,
    };
    s.put_record(Tree::Scratch, b"rec", &rec).unwrap();
    assert_eq!(s.get_record::<Rec>(Tree::Scratch, b"rec").unwrap(), Some(rec));
    assert_eq!(s.get_record::<Rec>(Tree::Scratch, b"none").unwrap(), None);
    s.put(Tree::Scratch, b"bad", b"{not json").unwrap();
    assert!(matches!(
        s.get_record::<Rec>(Tree::Scratch, b"bad"),
        Err(StoreError::Corrupt { .. })
    ));
}

fn scan_all_pages(s: &dyn Store) {
    let mut batch = WriteBatch::default();
    for i in 0..2500u32 {
        batch.put(
            Tree::Scratch,
            format!("p/{i:05}").into_bytes(),
            i.to_be_bytes().to_vec(),
        );
    }
    batch.put(Tree::Scratch, b"q/outside".to_vec(), b"x".to_vec());
    s.apply(batch).unwrap();
    let all = super::scan_all(s, Tree::Scratch, b"p/").unwrap();
    assert_eq!(all.len(), 2500);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "in key order, no repeats"
    );
    assert_eq!(all[2499].0, b"p/02499".to_vec());
}

fn concurrent_transactions_are_isolated<S: Store + 'static>(s: Arc<S>) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 50;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..INCREMENTS {
                    s.transaction(&|tx| {
                        let n = tx
                            .get(Tree::Scratch, b"counter")?
                            .map(|v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])))
                            .unwrap_or(0);
                        tx.put(Tree::Scratch, b"counter", &(n + 1).to_be_bytes())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let n = s.get(Tree::Scratch, b"counter").unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(n.try_into().unwrap()), THREADS * INCREMENTS);
}

/// Batches from many threads at once (an engine may apply them together): every one lands,
/// whole, and a later batch from the same thread wins over an earlier one.
fn concurrent_batches_all_land_whole_and_in_order<S: Store + 'static>(s: Arc<S>) {
    const THREADS: u32 = 8;
    const BATCHES: u32 = 200;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..BATCHES {
                    let mut batch = WriteBatch::default();
                    batch.put(Tree::Scratch, format!("t{t}/b{i:04}/a"), i.to_be_bytes().to_vec());
                    batch.put(Tree::Meta, format!("t{t}/b{i:04}/b"), i.to_be_bytes().to_vec());
                    batch.put(Tree::Scratch, format!("t{t}/last"), i.to_be_bytes().to_vec());
                    if i > 0 {
                        batch.delete(Tree::Scratch, format!("t{t}/b{:04}/gone", i - 1));
                    }
                    batch.put(Tree::Scratch, format!("t{t}/b{i:04}/gone"), Vec::new());
                    s.apply(batch).unwrap();
                    // What a caller applied is there when apply returns.
                    assert!(
                        s.get(Tree::Meta, format!("t{t}/b{i:04}/b").as_bytes())
                            .unwrap()
                            .is_some()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for t in 0..THREADS {
        let prefix = format!("t{t}/");
        let meta = crate::store::scan_all(&*s, Tree::Meta, prefix.as_bytes()).unwrap();
        assert_eq!(meta.len(), BATCHES as usize);
        let scratch = crate::store::scan_all(&*s, Tree::Scratch, prefix.as_bytes()).unwrap();
        // One `a` per batch, one `gone` (the last batch's), and `last`.
        assert_eq!(scratch.len(), BATCHES as usize + 2, "thread {t}");
        let last = s
            .get(Tree::Scratch, format!("t{t}/last").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(last, (BATCHES - 1).to_be_bytes().to_vec());
        assert!(
            s.get(Tree::Scratch, format!("t{t}/b{:04}/gone", BATCHES - 1).as_bytes())
                .unwrap()
                .is_some()
        );
    }
}
