use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::source::memory::MemorySource;
use crate::source::{BlobStream, Source};

/// A source that counts what is read of it.
struct Counting {
    inner: MemorySource,
    reads: AtomicUsize,
}

impl Source for Counting {
    fn location(&self) -> &Path {
        self.inner.location()
    }
    fn index(&self) -> Result<ImageIndex, crate::layout::Error> {
        self.inner.index()
    }
    fn contains(&self, digest: &Digest) -> Result<bool, crate::layout::Error> {
        self.inner.contains(digest)
    }
    fn read(&self, desc: &Descriptor) -> Result<Vec<u8>, crate::layout::Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(desc)
    }
    fn open(&self, desc: &Descriptor) -> Result<BlobStream, crate::layout::Error> {
        self.inner.open(desc)
    }
}

fn counting(src: MemorySource) -> (Arc<Counting>, Graph) {
    let counting = Arc::new(Counting { inner: src, reads: AtomicUsize::new(0) });
    let graph = Graph::open(counting.clone()).unwrap();
    (counting, graph)
}

/// A two-platform index tagged `v1`, plus an image tagged `solo`.
fn layout() -> (MemorySource, Descriptor, Vec<Descriptor>, Descriptor) {
    let mut src = MemorySource::default();
    let amd = src.image("linux/amd64", 2, 100);
    let arm = src.image("linux/arm64", 2, 100);
    let index = src.index_of(&[amd.clone(), arm.clone()]);
    src.tag(&index, "v1");
    let solo = src.image("linux/amd64", 1, 50);
    src.tag(&solo, "solo");
    (src, index, vec![amd, arm], solo)
}

#[test]
fn everything_is_read_once_whatever_is_asked() {
    let (src, index, children, solo) = layout();
    let (counting, graph) = counting(src);
    let closure = graph.closure(&[index.clone(), solo.clone()]).unwrap();
    // Children first; every blob once; the index is one above its manifests.
    let order: Vec<&Digest> = closure.nodes.iter().map(|r| &r.desc.digest).collect();
    assert_eq!(order.last(), Some(&&index.digest), "{order:?}");
    assert!(closure.nodes.iter().filter(|r| r.height == 0).count() == 3);
    assert_eq!(closure.nodes.iter().find(|r| r.desc.digest == index.digest).unwrap().height, 1);
    assert!(closure.nodes.iter().filter(|r| r.child).all(|r| children.contains(&r.desc)));
    assert_eq!(closure.blobs.len(), 3 + 3 + 2, "configs and layers of three images");
    assert!(closure.absent.is_empty());
    let reads = counting.reads.load(Ordering::SeqCst);
    assert_eq!(reads, 4, "three manifests and the index");
    // Asked again, in other ways: nothing is read again.
    graph.closure(std::slice::from_ref(&index)).unwrap();
    assert_eq!(graph.find(&children[1].digest).unwrap().unwrap().platform, children[1].platform);
    assert!(graph.node(&solo).unwrap().is_some());
    assert_eq!(counting.reads.load(Ordering::SeqCst), reads);
}

#[test]
fn finding_a_digest_reads_indexes_only() {
    let (src, index, children, _) = layout();
    let (counting, graph) = counting(src);
    let found = graph.find(&children[0].digest).unwrap().unwrap();
    assert_eq!(found.platform.as_ref().unwrap().to_string(), "linux/amd64");
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1, "only the index");
    assert!(graph.find(&Digest::sha256(b"nothing")).unwrap().is_none());
    assert!(graph.find(&index.digest).unwrap().is_some());
}

#[test]
fn what_the_source_lacks_is_named_in_order() {
    let (mut src, index, children, _) = layout();
    src.remove(&children[0].digest);
    let graph = Graph::open(Arc::new(src)).unwrap();
    let closure = graph.closure(std::slice::from_ref(&index)).unwrap();
    assert_eq!(closure.absent, vec![children[0].clone()]);
    // Named: the index, then its children as it names them, present or not.
    let named: Vec<&Digest> = closure.named.iter().map(|d| &d.digest).collect();
    assert_eq!(named, [&index.digest, &children[0].digest, &children[1].digest]);
    // The index still counts one above the child that is there.
    assert_eq!(closure.nodes.last().unwrap().height, 1);
}

#[test]
fn indexes_nested_too_deep_or_in_a_cycle_are_refused() {
    let mut src = MemorySource::default();
    let mut top = src.image("linux/amd64", 1, 10);
    for _ in 0..=MAX_DEPTH + 1 {
        top = src.index_of(&[top]);
    }
    src.tag(&top, "deep");
    let graph = Graph::open(Arc::new(src)).unwrap();
    let err = graph.closure(&[top.clone()]).unwrap_err();
    assert!(matches!(err, Error::IndexCycle { .. }), "{err:?}");
    // One level less is fine.
    let mut src = MemorySource::default();
    let mut top = src.image("linux/amd64", 1, 10);
    for _ in 0..MAX_DEPTH {
        top = src.index_of(&[top]);
    }
    let graph = Graph::open(Arc::new(src)).unwrap();
    assert_eq!(graph.closure(&[top]).unwrap().nodes.len(), MAX_DEPTH + 1);
}

#[test]
fn other_media_types_are_refused_by_name() {
    let mut src = MemorySource::default();
    let odd = src.put("application/vnd.example.thing", b"{}".to_vec());
    src.tag(&odd, "odd");
    let graph = Graph::open(Arc::new(src)).unwrap();
    let err = graph.closure(&[odd]).unwrap_err();
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err:?}");
}
