//! A deterministic OCI image layout generator that writes real files: the same calls give
//! byte-identical layouts (no clock, no randomness, serde_json with a fixed key order).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// The fixed creation time written into every config.
const CREATED: &str = "2024-01-01T00:00:00Z";

/// A descriptor of something written into the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// The descriptor as JSON (mediaType, digest, size, and platform/annotations when set).
    pub json: Value,
}

impl Desc {
    fn new(media_type: &str, digest: String, size: u64) -> Desc {
        let json = json!({ "mediaType": media_type, "digest": digest, "size": size });
        Desc { media_type: media_type.to_string(), digest, size, json }
    }

    /// The hex part of the digest.
    pub fn hex(&self) -> &str {
        self.digest.split_once(':').map(|(_, h)| h).unwrap_or(&self.digest)
    }

    /// The descriptor's `platform` as (os, architecture, variant), if it has one.
    pub fn platform(&self) -> Option<(String, String, Option<String>)> {
        let p = self.json.get("platform")?;
        Some((
            p["os"].as_str()?.to_string(),
            p["architecture"].as_str()?.to_string(),
            p.get("variant").and_then(|v| v.as_str()).map(String::from),
        ))
    }

    fn with_platform(mut self, os: &str, arch: &str, variant: Option<&str>) -> Desc {
        let mut p = json!({ "architecture": arch, "os": os });
        if let Some(v) = variant {
            p["variant"] = json!(v);
        }
        self.json["platform"] = p;
        self
    }

    fn with_annotation(mut self, key: &str, value: &str) -> Desc {
        if !self.json["annotations"].is_object() {
            self.json["annotations"] = json!({});
        }
        self.json["annotations"][key] = json!(value);
        self
    }
}

/// What `LayoutBuilder::image` builds.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// (os, architecture, variant): written into the config and, when Some, into the
    /// returned manifest descriptor's `platform`. None: config says linux/amd64, the
    /// descriptor has no platform.
    pub platform: Option<(String, String, Option<String>)>,
    /// (seed, size) per layer; the same pair gives the same layer blob.
    pub layers: Vec<(u64, usize)>,
    /// Docker schema 2 media types instead of OCI ones.
    pub docker: bool,
    /// Goes into the config, so two images with the same layers still differ.
    pub config_seed: u64,
}

impl ImageSpec {
    pub fn new(layers: &[(u64, usize)], config_seed: u64) -> ImageSpec {
        ImageSpec { layers: layers.to_vec(), config_seed, ..Default::default() }
    }

    pub fn platform(mut self, os: &str, arch: &str, variant: Option<&str>) -> ImageSpec {
        self.platform = Some((os.to_string(), arch.to_string(), variant.map(String::from)));
        self
    }

    pub fn docker(mut self, docker: bool) -> ImageSpec {
        self.docker = docker;
        self
    }
}

pub struct LayoutBuilder {
    root: PathBuf,
    /// The `manifests` of index.json, in the order they were added.
    entries: Vec<Value>,
}

impl LayoutBuilder {
    /// Creates `root` and `root/blobs/sha256`.
    pub fn new(root: &Path) -> LayoutBuilder {
        fs::create_dir_all(root.join("blobs").join("sha256")).expect("create layout blobs dir");
        LayoutBuilder { root: root.to_path_buf(), entries: Vec::new() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/blobs/sha256/<hex>` for `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("digest alg:hex");
        self.root.join("blobs").join(alg).join(hex)
    }

    /// Writes `bytes` as a blob (content-addressed; idempotent).
    pub fn blob(&mut self, bytes: &[u8]) -> (String, u64) {
        let digest = super::sha256_digest(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            fs::write(&path, bytes).expect("write blob");
        }
        (digest, bytes.len() as u64)
    }

    /// Reads a blob back.
    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        fs::read(self.blob_path(digest)).unwrap_or_else(|e| panic!("read blob {digest}: {e}"))
    }

    /// A layer of `size` pseudo-random bytes derived from `seed` (OCI tar+gzip media type; the
    /// bytes are not really gzip, registries do not look).
    pub fn layer(&mut self, seed: u64, size: usize) -> Desc {
        self.layer_with_media_type(seed, size, OCI_LAYER_GZIP)
    }

    pub fn layer_with_media_type(&mut self, seed: u64, size: usize, media_type: &str) -> Desc {
        let bytes = pseudo_random_bytes(seed, size);
        let (digest, size) = self.blob(&bytes);
        Desc::new(media_type, digest, size)
    }

    fn json_blob(&mut self, value: &Value, media_type: &str) -> Desc {
        let bytes = serde_json::to_vec(value).expect("serialize JSON");
        let (digest, size) = self.blob(&bytes);
        Desc::new(media_type, digest, size)
    }

    /// Writes the layers, a valid image config and the manifest; returns the manifest
    /// descriptor (with `platform` when `spec.platform` is Some).
    pub fn image(&mut self, spec: &ImageSpec) -> Desc {
        let (manifest_type, config_type, layer_type) = if spec.docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
        } else {
            (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
        };
        let layers: Vec<Desc> = spec
            .layers
            .iter()
            .map(|&(seed, size)| self.layer_with_media_type(seed, size, layer_type))
            .collect();
        let (os, arch, variant) = match &spec.platform {
            Some((os, arch, variant)) => (os.as_str(), arch.as_str(), variant.as_deref()),
            None => ("linux", "amd64", None),
        };
        let mut config = json!({
            "architecture": arch,
            "os": os,
            "created": CREATED,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Labels": { "imagepush.test.config-seed": spec.config_seed.to_string() },
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
            },
            "history": layers
                .iter()
                .enumerate()
                .map(|(i, _)| json!({ "created": CREATED, "created_by": format!("test layer {i}") }))
                .collect::<Vec<_>>(),
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        let config_desc = self.json_blob(&config, config_type);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config_desc.json,
            "layers": layers.iter().map(|l| l.json.clone()).collect::<Vec<_>>(),
        });
        let desc = self.json_blob(&manifest, manifest_type);
        match &spec.platform {
            Some((os, arch, variant)) => desc.with_platform(os, arch, variant.as_deref()),
            None => desc,
        }
    }

    /// An OCI image index (or, with `docker`, a Docker manifest list) of `manifests`.
    pub fn index(&mut self, manifests: &[Desc], docker: bool) -> Desc {
        let media_type = if docker { DOCKER_MANIFEST_LIST } else { OCI_INDEX };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests.iter().map(|m| m.json.clone()).collect::<Vec<_>>(),
        });
        self.json_blob(&index, media_type)
    }

    /// A BuildKit-style attestation manifest for `image`: platform unknown/unknown, the
    /// `vnd.docker.reference.*` annotations, one small in-toto layer.
    pub fn attestation_for(&mut self, image: &Desc) -> Desc {
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://spdx.dev/Document",
            "subject": [{ "name": "_", "digest": { "sha256": image.hex() } }],
            "predicate": { "spdxVersion": "SPDX-2.3", "name": format!("sbom-{}", image.hex()) },
        });
        let layer = self
            .json_blob(&statement, IN_TOTO)
            .with_annotation("in-toto.io/predicate-type", "https://spdx.dev/Document");
        let config = json!({
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
        });
        let config_desc = self.json_blob(&config, OCI_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc.json,
            "layers": [layer.json],
        });
        self.json_blob(&manifest, OCI_MANIFEST)
            .with_platform("unknown", "unknown", None)
            .with_annotation(REFERENCE_DIGEST, &image.digest)
            .with_annotation(REFERENCE_TYPE, ATTESTATION_MANIFEST)
    }

    /// Adds an index.json entry for `desc` named `name` (replacing an entry of the same name).
    pub fn tag(&mut self, desc: &Desc, name: &str) {
        self.entries.retain(|e| e["annotations"][REF_NAME].as_str() != Some(name));
        let entry = desc.clone().with_annotation(REF_NAME, name).json;
        self.entries.push(entry);
    }

    /// Adds an index.json entry for `desc` with these annotations (`io.containerd.image.name`
    /// and `org.opencontainers.image.ref.name`, as `ctr export` writes them, or any others).
    pub fn name(&mut self, desc: &Desc, annotations: &[(&str, &str)]) {
        let mut entry = desc.clone();
        for (k, v) in annotations {
            entry = entry.with_annotation(k, v);
        }
        self.entries.push(entry.json);
    }

    /// Adds an index.json entry for `desc` without a name.
    pub fn add_untagged(&mut self, desc: &Desc) {
        self.entries.push(desc.json.clone());
    }

    /// Deletes a blob file (for thin or partial layouts); a missing blob is not an error.
    pub fn remove_blob(&self, digest: &str) {
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove blob {digest}: {e}"),
        }
    }

    /// The config and layer descriptors of an image manifest, read back from the layout.
    pub fn children(&self, manifest: &Desc) -> (Desc, Vec<Desc>) {
        let m: Value =
            serde_json::from_slice(&self.read_blob(&manifest.digest)).expect("manifest JSON");
        let config = desc_from_json(&m["config"]);
        let layers = m["layers"]
            .as_array()
            .map(|a| a.iter().map(desc_from_json).collect())
            .unwrap_or_default();
        (config, layers)
    }

    /// Every blob digest an image manifest references (config first, then layers).
    pub fn blob_digests(&self, manifest: &Desc) -> Vec<String> {
        let (config, layers) = self.children(manifest);
        std::iter::once(config.digest).chain(layers.into_iter().map(|l| l.digest)).collect()
    }

    /// The manifests of an index, read back from the layout.
    pub fn index_manifests(&self, index: &Desc) -> Vec<Desc> {
        let m: Value = serde_json::from_slice(&self.read_blob(&index.digest)).expect("index JSON");
        m["manifests"]
            .as_array()
            .map(|a| a.iter().map(desc_from_json).collect())
            .unwrap_or_default()
    }

    /// index.json entries as they will be written.
    pub fn entries(&self) -> &[Value] {
        &self.entries
    }

    /// Writes `oci-layout` and `index.json`; call again after adding entries.
    pub fn write(&self) {
        fs::write(self.root.join(OCI_LAYOUT_FILE), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.entries,
        });
        fs::write(self.root.join("index.json"), serde_json::to_vec(&index).unwrap())
            .expect("write index.json");
    }
}

/// A `Desc` from descriptor JSON.
pub fn desc_from_json(v: &Value) -> Desc {
    Desc {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_u64().unwrap_or_default(),
        json: v.clone(),
    }
}

/// `size` bytes from a splitmix64 stream seeded with `seed`.
pub fn pseudo_random_bytes(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Seed of layer `i` of an image built from `seed` by the convenience functions.
pub fn layer_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1)
}

/// A layout at `root` with one OCI image (linux/amd64 config, no descriptor platform) of
/// layers of `layer_sizes`, tagged `tag`, written. Layer seeds come from `layer_seed(seed, i)`.
pub fn simple_image(
    root: &Path,
    tag: &str,
    layer_sizes: &[usize],
    seed: u64,
) -> (LayoutBuilder, Desc) {
    let mut b = LayoutBuilder::new(root);
    let layers: Vec<(u64, usize)> =
        layer_sizes.iter().enumerate().map(|(i, &size)| (layer_seed(seed, i), size)).collect();
    let image = b.image(&ImageSpec::new(&layers, seed));
    b.tag(&image, tag);
    b.write();
    (b, image)
}

/// Size of the base layer `multi_platform` shares between platforms.
pub const SHARED_BASE_SIZE: usize = 8192;

/// A layout at `root` with an OCI index tagged `tag`: one image per platform, each with its own
/// layer (4096 + 16·i bytes) on top of, when `shared_base_layer`, one base layer common to all
/// platforms (`SHARED_BASE_SIZE` bytes, seed `seed`). With `with_attestations`, a BuildKit-style
/// attestation manifest per image follows the images in the index. Returns the builder, the
/// index and the platform images (not the attestations), in order. Written.
pub fn multi_platform(
    root: &Path,
    tag: &str,
    platforms: &[(&str, &str, Option<&str>)],
    with_attestations: bool,
    shared_base_layer: bool,
    seed: u64,
) -> (LayoutBuilder, Desc, Vec<Desc>) {
    let mut b = LayoutBuilder::new(root);
    let mut images = Vec::new();
    for (i, &(os, arch, variant)) in platforms.iter().enumerate() {
        let mut layers = Vec::new();
        if shared_base_layer {
            layers.push((seed, SHARED_BASE_SIZE));
        }
        layers.push((layer_seed(seed, 100 + i), 4096 + 16 * i));
        let spec = ImageSpec::new(&layers, seed.wrapping_mul(100).wrapping_add(i as u64))
            .platform(os, arch, variant);
        images.push(b.image(&spec));
    }
    let mut entries = images.clone();
    if with_attestations {
        for image in &images {
            entries.push(b.attestation_for(image));
        }
    }
    let index = b.index(&entries, false);
    b.tag(&index, tag);
    b.write();
    (b, index, images)
}
