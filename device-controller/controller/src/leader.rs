//! Leader election with a `coordination.k8s.io/v1` Lease, so that two replicas
//! are safe: only the holder reconciles. The holder renews every `renew`; a
//! lease not renewed for `duration` may be taken over. Writes carry the Lease's
//! resourceVersion, so two replicas racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time.clone() else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed
        .saturating_add(SignedDuration::from_secs(secs))
        .map_or(true, |until| until < now)
}

/// Tries once to take or renew the lease. `Ok(true)`: this replica holds it.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let mine = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            let free = spec.holder_identity.as_deref().is_none_or(str::is_empty)
                || expired(spec, Timestamp::now());
            if !mine && !free {
                return Ok(false);
            }
            if !mine {
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration);
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the lease. Returns false on shutdown.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaseConfig, shutdown: &CancellationToken) -> bool {
    loop {
        match try_acquire(api, cfg).await {
            Ok(true) => return true,
            Ok(false) => tracing::debug!(lease = %cfg.name, "another replica leads"),
            Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "cannot read the lease"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(cfg.renew) => {}
        }
    }
}

/// Renews the lease until `shutdown` (returns true) or until it could not be
/// renewed for a whole lease duration (returns false: leadership is lost).
pub async fn hold(api: &Api<Lease>, cfg: &LeaseConfig, shutdown: &CancellationToken) -> bool {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return true,
            _ = tokio::time::sleep(cfg.renew) => {}
        }
        match try_acquire(api, cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %cfg.name, "the lease was taken by another replica");
                return false;
            }
            Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "lease renewal failed"),
        }
        if last_ok.elapsed() > cfg.duration {
            tracing::error!(lease = %cfg.name, "could not renew the lease for {:?}", cfg.duration);
            return false;
        }
    }
}

/// Gives the lease up (best effort) so a standby takes over at once.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renewed: i64| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec(990), now));
        assert!(expired(&spec(980), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
