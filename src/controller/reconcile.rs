//! One reconcile of one ImagePush: gather the facts `decide` asks for (`observe`), then carry
//! out the step it returns (`act`). Every step looks at the world (the Jobs and their pods as
//! the controller's watches hold them, logs and events), not at a memory of its own, so a
//! restarted controller picks up where the last one was, and a finished generation costs no
//! API call at all. Nothing here chooses between outcomes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info_span, warn};

use super::act::Act;
use super::decide::{self, Facts, Need, Step};
use super::{Context, Error, metrics, observe, validate};
use crate::crd::ImagePush;

pub async fn reconcile(ip: Arc<ImagePush>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let span = info_span!(
        "reconcile",
        namespace = ip.metadata.namespace.as_deref().unwrap_or_default(),
        name = %ip.name_any(),
        generation = ip.metadata.generation.unwrap_or_default(),
    );
    let started = std::time::Instant::now();
    let result = async {
        match once(&ip, &ctx).await? {
            Ok(action) => Ok(action),
            // The cache was behind: decide once more on the object as it is now.
            Err(fresh) => once(&fresh, &ctx).await?.or(Ok(Action::requeue(Duration::from_secs(1)))),
        }
    }
    .instrument(span)
    .await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    result
}

/// One decision and its step. `Err(fresh)`: a Job was about to be created on facts older than
/// the ImagePush as the API has it now (a status the cache has not seen yet).
async fn once(ip: &ImagePush, ctx: &Context) -> Result<Result<Action, ImagePush>, Error> {
    let ns = ip.namespace().ok_or(Error::MissingField("ImagePush", "metadata.namespace"))?;
    let status = ip.status.clone().unwrap_or_default();
    let spec_hash = decide::spec_hash(&ip.spec);
    // The target, and the worker pod's settings within the admin's defaults.
    let valid = validate::validate_with(
        &ip.spec,
        &ctx.config.allowed_host_path_roots,
        &ctx.config.allowed_targets,
    )
    .and_then(|target| Ok((target, ctx.config.worker.pod.resolve(&ip.spec)?)));
    let mut facts = Facts {
        namespace: &ns,
        generation: ip.metadata.generation.unwrap_or(1),
        target: &ip.spec.target,
        deleting: ip.metadata.deletion_timestamp.is_some(),
        suspended: ip.spec.suspend,
        requested: super::job::requested(ip),
        spec_hash: &spec_hash,
        status: &status,
        valid: valid.as_ref().map(|_| ()).map_err(Clone::clone),
        jobs: None,
        dependencies: None,
        worker: None,
        now: Timestamp::now(),
    };
    loop {
        let step = match decide::decide(&facts) {
            Step::Need(need) => {
                gather(ctx, ip, &mut facts, need).await?;
                continue;
            }
            Step::Create { attempt } => {
                if let Some(fresh) = newer(ctx, ip).await? {
                    return Ok(Err(fresh));
                }
                let act = Act { ctx, ip, facts: &facts };
                let (target, pod) = valid.as_ref().expect("decide creates only for a valid spec");
                match act.create_job(target, pod, attempt).await? {
                    Ok(name) => return act.started(&name, attempt).await.map(Ok),
                    Err(refusal) => refusal,
                }
            }
            step => step,
        };
        return Act { ctx, ip, facts: &facts }.step(step).await.map(Ok);
    }
}

/// The ImagePush as the API has it, when that is newer than `ip`.
async fn newer(ctx: &Context, ip: &ImagePush) -> Result<Option<ImagePush>, Error> {
    let api: Api<ImagePush> =
        Api::namespaced(ctx.client.clone(), ip.metadata.namespace.as_deref().unwrap_or_default());
    Ok(api.get_opt(&ip.name_any()).await?.filter(|f| f.resource_version() != ip.resource_version()))
}

/// Fetches what `decide` asked for.
async fn gather(
    ctx: &Context,
    ip: &ImagePush,
    facts: &mut Facts<'_>,
    need: Need,
) -> Result<(), Error> {
    let ns = facts.namespace;
    match need {
        Need::Jobs => facts.jobs = Some(observe::owned_jobs(ctx, ip, ns)),
        Need::Dependencies => facts.dependencies = Some(observe::dependencies(ctx, ip, ns).await?),
        Need::Worker => {
            let jobs = facts.jobs.as_deref().unwrap_or_default();
            let round = super::job::round(facts.requested);
            let job = decide::current_job(jobs, facts.generation, round.as_deref())
                .expect("decide asks for the worker of a Job");
            facts.worker = Some(observe::worker(ctx, ns, job, facts.now).await?);
        }
    }
    Ok(())
}

pub fn error_policy(_ip: Arc<ImagePush>, error: &Error, ctx: Arc<Context>) -> Action {
    let label = error.metric_label();
    ctx.metrics
        .reconcile_failures
        .get_or_create(&metrics::ReasonLabel { reason: label.into() })
        .inc();
    if error.is_conflict() {
        // A status write on an object that changed meanwhile: decide again on the new one.
        debug!(error = %error, "the ImagePush changed during the reconcile");
        return Action::requeue(Duration::from_secs(1));
    }
    warn!(error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}
