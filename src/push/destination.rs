//! Where a push puts content: one repository of one registry. The push speaks to it only
//! through this seam (is a blob or manifest there, mount one, upload one, put a manifest,
//! point a tag); authentication, status handling and retries live beneath it, in the
//! registry client, whose credentials never leave their registry's host. Tests put an
//! in-memory repository in its place.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::{TagOrDigest, Target};
use crate::registry::{self, MountOutcome, PutAnswer, RegistryClient, UploadSession};
use crate::source::BlobStream;

/// Opens a blob afresh, from its first byte (an upload that resumes or starts over opens it
/// again).
pub type BlobOpener<'a> = &'a (dyn Fn() -> Result<BlobStream, crate::layout::Error> + Sync);

/// Bytes sent so far, for progress.
pub type OnProgress = Arc<dyn Fn(u64) + Send + Sync>;

#[allow(async_fn_in_trait)]
pub trait Destination: Sync {
    /// `registry/repository`, as reports name it.
    fn name(&self) -> String;
    /// The registry, as the user named it (mount sources are reported as `registry/repo`).
    fn registry(&self) -> &str;
    /// The repository's path in its registry (what another repository mounts from).
    fn repository(&self) -> &str;
    async fn blob_exists(&self, digest: &Digest) -> Result<bool, registry::Error>;
    /// Whether another repository of the same registry holds the blob.
    async fn blob_exists_in(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, registry::Error>;
    /// Mounts the blob from `from`, a repository of the same registry.
    async fn mount(&self, digest: &Digest, from: &str) -> Result<MountOutcome, registry::Error>;
    async fn start_upload(&self) -> Result<UploadSession, registry::Error>;
    async fn cancel_upload(&self, session: UploadSession);
    /// Uploads the blob into `session`, every byte verified on the way.
    async fn upload(
        &self,
        session: UploadSession,
        open: BlobOpener<'_>,
        desc: &Descriptor,
        progress: OnProgress,
    ) -> Result<(), registry::Error>;
    async fn manifest_exists(&self, digest: &Digest) -> Result<bool, registry::Error>;
    /// The digest `tag` points at, if any.
    async fn tag_digest(&self, tag: &str) -> Result<Option<Digest>, registry::Error>;
    /// Puts a manifest or index, its bytes unchanged. `on_wire` is true exactly while a
    /// request is sent and unanswered. The answer says whether the registry indexed it as a
    /// referrer (`OCI-Subject`).
    async fn put_manifest(
        &self,
        at: TagOrDigest<'_>,
        bytes: &[u8],
        media_type: &str,
        on_wire: Option<&AtomicBool>,
    ) -> Result<PutAnswer, registry::Error>;
    /// The manifest or index at `reference` (a tag or digest) and its media type, if any;
    /// at most `limit` bytes.
    async fn get_manifest(
        &self,
        reference: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, String)>, registry::Error>;
}

/// A repository of a registry, through the registry client.
pub struct RegistryRepository<'c> {
    pub client: &'c RegistryClient,
    pub target: &'c Target,
}

impl Destination for RegistryRepository<'_> {
    fn name(&self) -> String {
        self.target.repository_name()
    }

    fn registry(&self) -> &str {
        &self.target.registry
    }

    fn repository(&self) -> &str {
        &self.target.repository
    }

    async fn blob_exists(&self, digest: &Digest) -> Result<bool, registry::Error> {
        self.client.blob_exists(&self.target.repository, digest).await
    }

    async fn blob_exists_in(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, registry::Error> {
        self.client.blob_exists(repository, digest).await
    }

    async fn mount(&self, digest: &Digest, from: &str) -> Result<MountOutcome, registry::Error> {
        self.client.mount(&self.target.repository, digest, from).await
    }

    async fn start_upload(&self) -> Result<UploadSession, registry::Error> {
        self.client.start_upload(&self.target.repository).await
    }

    async fn cancel_upload(&self, session: UploadSession) {
        self.client.cancel_upload(&self.target.repository, session).await
    }

    async fn upload(
        &self,
        session: UploadSession,
        open: BlobOpener<'_>,
        desc: &Descriptor,
        progress: OnProgress,
    ) -> Result<(), registry::Error> {
        let repo = &self.target.repository;
        self.client.upload(repo, session, open, &desc.digest, desc.size, progress).await
    }

    async fn manifest_exists(&self, digest: &Digest) -> Result<bool, registry::Error> {
        self.client.manifest_exists(&self.target.repository, digest).await
    }

    async fn tag_digest(&self, tag: &str) -> Result<Option<Digest>, registry::Error> {
        self.client.tag_digest(&self.target.repository, tag).await
    }

    async fn put_manifest(
        &self,
        at: TagOrDigest<'_>,
        bytes: &[u8],
        media_type: &str,
        on_wire: Option<&AtomicBool>,
    ) -> Result<PutAnswer, registry::Error> {
        self.client.put_manifest_watched(self.target, at, bytes, media_type, on_wire).await
    }

    async fn get_manifest(
        &self,
        reference: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, String)>, registry::Error> {
        self.client.get_manifest(&self.target.repository, reference, limit).await
    }
}

/// An in-memory repository, for tests of everything above the seam: what it holds, what
/// it was asked, and the answers a test wants (mounts that open a session, failures).
#[cfg(test)]
pub mod memory {
    use std::collections::{HashMap, HashSet};
    use std::io::Read;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::{BlobOpener, Destination, OnProgress};
    use crate::digest::Digest;
    use crate::oci::Descriptor;
    use crate::reference::TagOrDigest;
    use crate::registry::{self, MountOutcome, PutAnswer, UploadSession};

    #[derive(Default)]
    pub struct State {
        pub blobs: HashSet<Digest>,
        pub manifests: HashMap<Digest, Vec<u8>>,
        pub media_types: HashMap<Digest, String>,
        pub tags: HashMap<String, Digest>,
        /// Blobs other repositories of the registry hold: `repository -> digests`.
        pub elsewhere: HashMap<String, HashSet<Digest>>,
        /// Every call, in order (`HEAD blob sha256:…`, `mount … from …`, `PUT tag v1`, …).
        pub calls: Vec<String>,
        /// Bytes uploaded.
        pub uploaded: u64,
    }

    /// One in-memory registry, shared by its repositories.
    #[derive(Default)]
    pub struct RegistryState {
        /// What every repository holds: `repository -> digests`.
        pub blobs: HashMap<String, HashSet<Digest>>,
        /// Every call to any of its repositories, in order (`team/app: PUT tag v1`).
        pub calls: Vec<String>,
    }

    pub type Registry = Arc<Mutex<RegistryState>>;

    pub struct MemoryRepository {
        /// Its path (`team/app` unless built `in_registry`).
        pub repository: String,
        pub state: Mutex<State>,
        /// Mounts answer 202 (the registry could not mount) instead of 201.
        pub refuse_mounts: bool,
        /// The registry offers the referrers API: a manifest PUT with a `subject` is answered
        /// with `OCI-Subject`.
        pub referrers_api: bool,
        /// The registry it is part of, shared with its other repositories (which it can
        /// mount from).
        registry: Registry,
    }

    impl Default for MemoryRepository {
        fn default() -> Self {
            MemoryRepository::in_registry("team/app", &Registry::default())
        }
    }

    impl MemoryRepository {
        pub fn new() -> Self {
            Self::default()
        }

        /// Repository `repository` of `registry`.
        pub fn in_registry(repository: &str, registry: &Registry) -> Self {
            MemoryRepository {
                repository: repository.to_string(),
                state: Mutex::default(),
                refuse_mounts: false,
                referrers_api: false,
                registry: registry.clone(),
            }
        }

        fn call(&self, what: String) {
            self.registry.lock().unwrap().calls.push(format!("{}: {what}", self.repository));
            self.state.lock().unwrap().calls.push(what);
        }

        /// Puts a blob into the repository, as an earlier push would have.
        pub fn seed(&self, digest: &Digest) {
            let mut st = self.state.lock().unwrap();
            self.holds(&mut st, digest);
        }

        /// Records that this repository holds `digest`.
        fn holds(&self, st: &mut State, digest: &Digest) {
            st.blobs.insert(digest.clone());
            let mut registry = self.registry.lock().unwrap();
            registry.blobs.entry(self.repository.clone()).or_default().insert(digest.clone());
        }

        /// Whether another repository of the registry holds `digest`.
        fn elsewhere(&self, st: &State, repository: &str, digest: &Digest) -> bool {
            st.elsewhere.get(repository).is_some_and(|b| b.contains(digest))
                || self
                    .registry
                    .lock()
                    .unwrap()
                    .blobs
                    .get(repository)
                    .is_some_and(|b| b.contains(digest))
        }

        pub fn calls(&self) -> Vec<String> {
            self.state.lock().unwrap().calls.clone()
        }
    }

    impl Destination for MemoryRepository {
        fn name(&self) -> String {
            format!("registry.test/{}", self.repository)
        }

        fn registry(&self) -> &str {
            "registry.test"
        }

        fn repository(&self) -> &str {
            &self.repository
        }

        async fn blob_exists(&self, digest: &Digest) -> Result<bool, registry::Error> {
            self.call(format!("HEAD blob {digest}"));
            Ok(self.state.lock().unwrap().blobs.contains(digest))
        }

        async fn blob_exists_in(
            &self,
            repository: &str,
            digest: &Digest,
        ) -> Result<bool, registry::Error> {
            self.call(format!("HEAD blob {digest} in {repository}"));
            let st = self.state.lock().unwrap();
            Ok(self.elsewhere(&st, repository, digest))
        }

        async fn mount(
            &self,
            digest: &Digest,
            from: &str,
        ) -> Result<MountOutcome, registry::Error> {
            self.call(format!("mount {digest} from {from}"));
            let mut st = self.state.lock().unwrap();
            if self.elsewhere(&st, from, digest) && !self.refuse_mounts {
                self.holds(&mut st, digest);
                return Ok(MountOutcome::Mounted);
            }
            Ok(MountOutcome::Started(UploadSession::for_tests(format!("session for {digest}"))))
        }

        async fn start_upload(&self) -> Result<UploadSession, registry::Error> {
            self.call("POST upload".into());
            Ok(UploadSession::for_tests("session".into()))
        }

        async fn cancel_upload(&self, _session: UploadSession) {
            self.call("DELETE upload".into());
        }

        async fn upload(
            &self,
            _session: UploadSession,
            open: BlobOpener<'_>,
            desc: &Descriptor,
            progress: OnProgress,
        ) -> Result<(), registry::Error> {
            self.call(format!("upload {}", desc.digest));
            let (mut stream, mut verifier) = open().map_err(registry::Error::Content)?;
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).expect("memory");
            verifier.update(&bytes).map_err(registry::Error::Content)?;
            verifier.finish().map_err(registry::Error::Content)?;
            progress(desc.size);
            let mut st = self.state.lock().unwrap();
            st.uploaded += desc.size;
            self.holds(&mut st, &desc.digest);
            Ok(())
        }

        async fn manifest_exists(&self, digest: &Digest) -> Result<bool, registry::Error> {
            self.call(format!("HEAD manifest {digest}"));
            Ok(self.state.lock().unwrap().manifests.contains_key(digest))
        }

        async fn tag_digest(&self, tag: &str) -> Result<Option<Digest>, registry::Error> {
            self.call(format!("HEAD tag {tag}"));
            Ok(self.state.lock().unwrap().tags.get(tag).cloned())
        }

        async fn put_manifest(
            &self,
            at: TagOrDigest<'_>,
            bytes: &[u8],
            media_type: &str,
            _on_wire: Option<&AtomicBool>,
        ) -> Result<PutAnswer, registry::Error> {
            let digest = Digest::sha256(bytes);
            let mut st = self.state.lock().unwrap();
            // Like a registry: everything a manifest names must be there.
            let value: serde_json::Value = serde_json::from_slice(bytes).expect("JSON");
            let named = value["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&value["config"]).filter(|c| c.is_object()))
                .filter_map(|d| d["digest"].as_str()?.parse::<Digest>().ok())
                .filter(|d| !st.blobs.contains(d))
                .chain(
                    value["manifests"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d["digest"].as_str()?.parse::<Digest>().ok())
                        .filter(|d| !st.manifests.contains_key(d)),
                )
                .collect::<Vec<_>>();
            assert!(
                named.is_empty(),
                "PUT of {digest} names content the repository lacks: {named:?}"
            );
            if let TagOrDigest::Tag(t) = at {
                st.tags.insert(t.to_string(), digest.clone());
            }
            st.manifests.insert(digest.clone(), bytes.to_vec());
            st.media_types.insert(digest, media_type.to_string());
            drop(st);
            self.call(match at {
                TagOrDigest::Tag(t) => format!("PUT tag {t}"),
                TagOrDigest::Digest(d) => format!("PUT manifest {d}"),
            });
            let subject = value["subject"]["digest"].as_str().and_then(|d| d.parse().ok());
            Ok(PutAnswer { subject: subject.filter(|_| self.referrers_api) })
        }

        async fn get_manifest(
            &self,
            reference: &str,
            _limit: usize,
        ) -> Result<Option<(Vec<u8>, String)>, registry::Error> {
            self.call(format!("GET manifest {reference}"));
            let st = self.state.lock().unwrap();
            let digest = match reference.parse::<Digest>() {
                Ok(d) => Some(d),
                Err(_) => st.tags.get(reference).cloned(),
            };
            Ok(digest.and_then(|d| {
                let bytes = st.manifests.get(&d)?.clone();
                Some((bytes, st.media_types.get(&d).cloned().unwrap_or_default()))
            }))
        }
    }
}
