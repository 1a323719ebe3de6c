//! The worker pod's placement and shape: the cluster admin's defaults (`--worker-defaults`, the
//! chart's `worker` values) and what one ImagePush may choose within them (`spec.worker`).
//!
//! An ImagePush may set resources (each at most the default's limit for it), add tolerations
//! and add node labels to select; everything else (affinity, priority class, image pull
//! Secrets, environment, labels, annotations) is the admin's alone, and nothing here touches
//! the pod's user, security context or volumes.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use super::names::{dns_subdomain, label_key, label_value};
use super::quantity::milli;
use super::validate::Invalid;
use crate::crd::{ImagePushSpec, WorkerResources};

/// Resources an ImagePush may ask for.
pub const TENANT_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
/// Labels the Job controller puts on a Job's pods (besides `batch.kubernetes.io/*`).
const JOB_CONTROLLER_LABELS: [&str; 2] = ["controller-uid", "job-name"];
/// Condition reason of a `spec.worker` the defaults do not allow.
pub const NOT_ALLOWED: &str = "WorkerSettingsNotAllowed";

/// Settings of a worker pod: the admin's defaults, or those merged with an ImagePush's.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSettings {
    #[serde(default = "builtin_resources")]
    pub resources: WorkerResources,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub affinity: Option<Affinity>,
    #[serde(default)]
    pub priority_class_name: Option<String>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Default for PodSettings {
    fn default() -> PodSettings {
        PodSettings {
            resources: builtin_resources(),
            tolerations: vec![],
            node_selector: BTreeMap::new(),
            affinity: None,
            priority_class_name: None,
            image_pull_secrets: vec![],
            env: vec![],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// What a worker needs when nobody says otherwise: it streams blobs, it does not hold them.
fn builtin_resources() -> WorkerResources {
    let q = |pairs: &[(&str, &str)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
    };
    WorkerResources {
        requests: q(&[("cpu", "100m"), ("memory", "64Mi")]),
        limits: q(&[("memory", "256Mi")]),
    }
}

impl PodSettings {
    /// Reads and checks the defaults file (YAML or JSON).
    pub fn load(path: &Path) -> Result<PodSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let mut settings: PodSettings = if text.trim().is_empty() {
            PodSettings::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|e| e.to_string())?
        };
        // The chart writes "" for "not set".
        settings.priority_class_name = settings.priority_class_name.filter(|p| !p.is_empty());
        settings.check(&super::job::reserved())?;
        Ok(settings)
    }

    /// The admin's defaults must give a pod the API server accepts, and must leave alone the
    /// labels, annotations and variables the operator sets (`reserved`).
    pub fn check(&self, reserved: &Reserved) -> Result<(), String> {
        resources("resources", &self.resources, |_| true).map_err(|e| e.message)?;
        tolerations("tolerations", &self.tolerations).map_err(|e| e.message)?;
        node_selector("nodeSelector", &self.node_selector).map_err(|e| e.message)?;
        if let Some(p) = &self.priority_class_name {
            dns_subdomain(p).map_err(|e| format!("priorityClassName: {e}"))?;
        }
        for s in &self.image_pull_secrets {
            dns_subdomain(&s.name).map_err(|e| format!("imagePullSecrets: {e}"))?;
        }
        for (k, v) in &self.labels {
            label_key(k).and(label_value(v)).map_err(|e| format!("labels: {e}"))?;
            if reserved.labels.contains(&k.as_str()) || k.starts_with("imagepush.dev/") {
                return Err(format!("labels: {k} is the operator's"));
            }
            // The Job controller's own: a template that sets them does not match the Job's
            // selector, and the API server refuses the Job.
            if JOB_CONTROLLER_LABELS.contains(&k.as_str()) || k.starts_with("batch.kubernetes.io/")
            {
                return Err(format!("labels: {k} is the Job controller's"));
            }
        }
        for k in self.annotations.keys() {
            label_key(k).map_err(|e| format!("annotations: {e}"))?;
            if reserved.annotations.contains(&k.as_str()) {
                return Err(format!(
                    "annotations: {k} is the operator's (it keeps sidecars out of the worker pod)"
                ));
            }
        }
        for e in &self.env {
            if e.name.is_empty() || e.name.contains('=') {
                return Err(format!("env: {:?} is not a variable name", e.name));
            }
            if e.name.starts_with(reserved.env_prefix) {
                return Err(format!("env: {} is the operator's", e.name));
            }
        }
        Ok(())
    }

    /// These defaults with what `spec` chooses about its worker; refused (before any Job
    /// exists) when the choice is malformed or goes beyond the defaults.
    pub fn resolve(&self, spec: &ImagePushSpec) -> Result<PodSettings, Invalid> {
        let mut out = self.clone();
        let source_selector = spec.source.host_path.as_ref().and_then(|h| h.node_selector.as_ref());
        if let Some(selector) = source_selector {
            merge_selector(&mut out.node_selector, selector, "source.hostPath.nodeSelector")?;
        }
        let Some(w) = &spec.worker else { return Ok(out) };
        if let Some(r) = &w.resources {
            resources("worker.resources", r, |name| TENANT_RESOURCES.contains(&name))?;
            out.resources = within_limits(&self.resources, r)?;
            resources("worker.resources", &out.resources, |_| true)?;
        }
        tolerations("worker.tolerations", &w.tolerations)?;
        out.tolerations.extend(w.tolerations.iter().cloned());
        node_selector("worker.nodeSelector", &w.node_selector)?;
        merge_selector(&mut out.node_selector, &w.node_selector, "worker.nodeSelector")?;
        Ok(out)
    }

    /// As the worker container's `resources`.
    pub fn requirements(&self) -> ResourceRequirements {
        let some = |m: &BTreeMap<String, Quantity>| (!m.is_empty()).then(|| m.clone());
        ResourceRequirements {
            requests: some(&self.resources.requests),
            limits: some(&self.resources.limits),
            ..Default::default()
        }
    }
}

/// What the operator itself sets on a worker pod.
pub struct Reserved {
    pub labels: Vec<&'static str>,
    pub annotations: Vec<&'static str>,
    pub env_prefix: &'static str,
}

fn not_allowed(message: String) -> Invalid {
    Invalid { reason: NOT_ALLOWED, message }
}

fn spec_invalid(message: String) -> Invalid {
    Invalid { reason: "SpecInvalid", message }
}

/// The defaults' resources with `asked`'s entries in place of theirs; none of `asked` may be
/// above the defaults' limit for its resource.
fn within_limits(
    defaults: &WorkerResources,
    asked: &WorkerResources,
) -> Result<WorkerResources, Invalid> {
    for (kind, map) in [("requests", &asked.requests), ("limits", &asked.limits)] {
        for (name, q) in map {
            let Some(limit) = defaults.limits.get(name) else { continue };
            if milli(&q.0) > milli(&limit.0) {
                return Err(not_allowed(format!(
                    "worker.resources.{kind}.{name} {} is above the cluster's limit of {} for the worker",
                    q.0, limit.0
                )));
            }
        }
    }
    let mut out = defaults.clone();
    out.requests.extend(asked.requests.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.limits.extend(asked.limits.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(out)
}

/// Every quantity well-formed and not negative, names `allowed`, each request at most its
/// limit (the API server's rules).
fn resources(
    field: &str,
    r: &WorkerResources,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), Invalid> {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map {
            if !allowed(name) {
                return Err(not_allowed(format!(
                    "{field}.{kind}.{name}: only {} may be set here",
                    TENANT_RESOURCES.join(", ")
                )));
            }
            match milli(&q.0) {
                Some(v) if v >= 0 => {}
                _ => {
                    return Err(spec_invalid(format!(
                        "{field}.{kind}.{name}: {:?} is not a quantity (such as 250m, 2, 128Mi, 1Gi)",
                        q.0
                    )));
                }
            }
        }
    }
    for (name, req) in &r.requests {
        if let Some(lim) = r.limits.get(name)
            && milli(&req.0) > milli(&lim.0)
        {
            return Err(spec_invalid(format!(
                "{field}: the {name} request {} is above its limit {}",
                req.0, lim.0
            )));
        }
    }
    Ok(())
}

/// The API server's rules for tolerations (ValidateTolerations).
fn tolerations(field: &str, list: &[Toleration]) -> Result<(), Invalid> {
    for (i, t) in list.iter().enumerate() {
        let at = |why: String| spec_invalid(format!("{field}[{i}]: {why}"));
        let key = t.key.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        if !key.is_empty() {
            label_key(key).map_err(|e| at(format!("key: {e}")))?;
        }
        match t.operator.as_deref().unwrap_or("Equal") {
            "Equal" if key.is_empty() => {
                return Err(at("operator must be Exists when key is empty".into()));
            }
            "Equal" => label_value(value).map_err(|e| at(format!("value: {e}")))?,
            "Exists" if !value.is_empty() => {
                return Err(at("value must be empty when operator is Exists".into()));
            }
            "Exists" => {}
            other => return Err(at(format!("operator {other:?} is not Equal or Exists"))),
        }
        let effect = t.effect.as_deref().unwrap_or_default();
        if !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(at(format!(
                "effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
            )));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            return Err(at("tolerationSeconds needs effect NoExecute".into()));
        }
    }
    Ok(())
}

fn node_selector(field: &str, selector: &BTreeMap<String, String>) -> Result<(), Invalid> {
    for (k, v) in selector {
        label_key(k).map_err(|e| spec_invalid(format!("{field}: {e}")))?;
        label_value(v).map_err(|e| spec_invalid(format!("{field}.{k}: {e}")))?;
    }
    Ok(())
}

/// Adds `more` to `selector`; a key already there with another value would place the worker
/// outside the nodes the defaults chose.
fn merge_selector(
    selector: &mut BTreeMap<String, String>,
    more: &BTreeMap<String, String>,
    field: &str,
) -> Result<(), Invalid> {
    for (k, v) in more {
        match selector.get(k) {
            Some(have) if have != v => {
                return Err(not_allowed(format!(
                    "{field}: {k} is {have:?} for every worker of this cluster, not {v:?}"
                )));
            }
            _ => {
                selector.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
