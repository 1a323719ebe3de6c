//! How the status is written: server-side apply of the whole status by the controller's
//! field manager, on the resourceVersion the decision was made on. What the controller
//! omits from one apply to the next, the API server removes, so no write names a field to
//! clear. An object whose status an earlier version wrote with a merge patch has those
//! fields owned by an `Update` entry, which an apply would never remove: they are handed
//! over to the apply once (`hand_over`), as client-go's csaupgrade does by other means.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::Resource;
use serde_json::{Map, Value};

use crate::crd::{ImagePush, ImagePushStatus};

/// The apply configuration of `status`: apiVersion, kind, name, the resourceVersion as a
/// precondition, and the status without nulls (in an apply, null is not "absent").
pub fn body(status: &ImagePushStatus, name: &str, rv: Option<&str>) -> serde_json::Result<Value> {
    let mut metadata = Map::new();
    metadata.insert("name".into(), name.into());
    if let Some(rv) = rv {
        metadata.insert("resourceVersion".into(), rv.into());
    }
    Ok(serde_json::json!({
        "apiVersion": ImagePush::api_version(&()),
        "kind": ImagePush::kind(&()),
        "metadata": metadata,
        "status": without_nulls(serde_json::to_value(status)?),
    }))
}

/// `managed` with `manager`'s status fields moved from its `Update` entry (a merge patch by
/// a version of the controller before it applied) into its `Apply` entry; `None` when
/// there is no such `Update` entry.
pub fn upgraded(managed: &[ManagedFieldsEntry], manager: &str) -> Option<Vec<ManagedFieldsEntry>> {
    let is = |m: &ManagedFieldsEntry, op: &str| {
        m.manager.as_deref() == Some(manager)
            && m.operation.as_deref() == Some(op)
            && m.subresource.as_deref() == Some("status")
    };
    let update = managed.iter().find(|m| is(m, "Update"))?;
    let mut out: Vec<ManagedFieldsEntry> =
        managed.iter().filter(|m| !is(m, "Update")).cloned().collect();
    let fields = |m: &ManagedFieldsEntry| m.fields_v1.as_ref().map_or(Value::Null, |f| f.0.clone());
    match out.iter_mut().find(|m| is(m, "Apply")) {
        Some(apply) => {
            let union = overlay(fields(apply), fields(update));
            apply.fields_v1 = Some(FieldsV1(union));
        }
        None => out.push(ManagedFieldsEntry {
            operation: Some("Apply".into()),
            time: None,
            ..update.clone()
        }),
    }
    Some(out)
}

/// `under` with `over` laid on it: maps merged key by key, anything else as `over` has it.
fn overlay(under: Value, over: Value) -> Value {
    match (under, over) {
        (Value::Object(mut a), Value::Object(b)) => {
            for (k, v) in b {
                let merged = match a.remove(&k) {
                    Some(old) => overlay(old, v),
                    None => v,
                };
                a.insert(k, merged);
            }
            Value::Object(a)
        }
        (under, Value::Null) => under,
        (_, over) => over,
    }
}

fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Phase;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: subresource.map(Into::into),
            ..Default::default()
        }
    }

    fn fields(v: Value) -> Option<FieldsV1> {
        Some(FieldsV1(v))
    }

    #[test]
    fn only_our_own_merge_patched_status_is_upgraded() {
        let ours = "imagepush-controller";
        let others = [
            entry(ours, "Apply", Some("status")),
            entry(ours, "Update", None),
            entry("kubectl-edit", "Update", Some("status")),
        ];
        for e in &others {
            assert_eq!(upgraded(std::slice::from_ref(e), ours), None, "{e:?}");
        }
        assert_eq!(upgraded(&[], ours), None);
    }

    #[test]
    fn the_update_entrys_fields_join_the_apply_entry() {
        let ours = "imagepush-controller";
        let update = ManagedFieldsEntry {
            api_version: Some("imagepush.dev/v1alpha1".into()),
            fields_type: Some("FieldsV1".into()),
            fields_v1: fields(
                serde_json::json!({"f:status": {"f:phase": {}, "f:progress": {"f:bytesDone": {}}}}),
            ),
            ..entry(ours, "Update", Some("status"))
        };
        let spec_owner = entry("kubectl", "Update", None);
        // No apply entry yet: the update entry becomes one.
        let out = upgraded(&[spec_owner.clone(), update.clone()], ours).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], spec_owner);
        assert_eq!(out[1].operation.as_deref(), Some("Apply"));
        assert_eq!(out[1].fields_v1, update.fields_v1);
        assert_eq!(out[1].api_version.as_deref(), Some("imagepush.dev/v1alpha1"));
        // An apply entry already there: the union of both.
        let apply = ManagedFieldsEntry {
            fields_v1: fields(serde_json::json!({"f:status": {"f:phase": {}, "f:digest": {}}})),
            ..entry(ours, "Apply", Some("status"))
        };
        let out = upgraded(&[update, apply], ours).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].fields_v1,
            fields(serde_json::json!({"f:status": {
                "f:phase": {}, "f:digest": {}, "f:progress": {"f:bytesDone": {}}}}))
        );
    }

    #[test]
    fn the_body_names_the_object_and_carries_no_nulls() {
        let st = ImagePushStatus { phase: Some(Phase::Pending), ..Default::default() };
        let b = body(&st, "app", Some("42")).unwrap();
        assert_eq!(b["apiVersion"], "imagepush.dev/v1alpha1");
        assert_eq!(b["kind"], "ImagePush");
        assert_eq!(b["metadata"], serde_json::json!({"name": "app", "resourceVersion": "42"}));
        assert_eq!(b["status"], serde_json::json!({"phase": "Pending"}));
        let nested = without_nulls(serde_json::json!({"a": {"b": null, "c": [{"d": null}]}}));
        assert_eq!(nested, serde_json::json!({"a": {"c": [{}]}}));
    }
}
