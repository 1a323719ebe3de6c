/// What can go wrong in a reconcile. A spec problem is not an error here: it becomes a
/// `Stalled` status and the reconcile succeeds (waiting for a spec change).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed; the reconcile is retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object is missing a field the API always sets.
    #[error("{0} has no {1}")]
    MissingField(&'static str, &'static str),
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// The API answered 409: the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(e)) if e.code == 409)
    }

    /// A short label for the `imagepush_reconcile_failures_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            _ if self.is_conflict() => "conflict",
            Error::Kube(_) => "kube_api",
            Error::MissingField(..) => "missing_field",
            Error::Serialize(_) => "serialize",
        }
    }
}
