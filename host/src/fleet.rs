//! Replicas in step: with a store several `berth serve` processes share,
//! each follows the component versions the store names, so a hot swap or
//! rollback through any replica's admin API reaches all of them.

use crate::app::App;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often a replica looks at the store's versions when no notification
/// woke it: the bound on how long a missed notification delays a swap.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Follow the shared store's live versions until `stop` resolves: on every
/// change notification, and every [`LOOK_EVERY`] regardless. Compiling
/// happens off the request path, one version at a time, as for any swap.
pub async fn follow(app: Arc<App>, stop: impl Future<Output = ()>) {
    if !app.is_shared() {
        return;
    }
    static ERRORS: crate::logging::Throttle = crate::logging::Throttle::new();
    let following = async {
        loop {
            if let Err(e) = app.follow_shared().await
                && let Some(suppressed) = ERRORS.allow()
            {
                tracing::warn!(error = %e, suppressed, "cannot read the shared store's component versions; will look again");
            }
            tokio::select! {
                () = app.versions_changed() => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    };
    tokio::select! {
        () = following => {}
        () = stop => {}
    }
}

/// This process's name in a shared store's records: the host name (a
/// Kubernetes pod's name) and the process id.
pub fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    //! Replicas in one process: several `App`s on one in-memory store and
    //! one set of shared versions, each following it as `follow` would.

    use crate::app::{App, Following, SwapError, sha256_hex};
    use crate::manifest::Manifest;
    use crate::runtime::{EngineConfig, Runtime};
    use crate::store::{Backend, MemoryStore, MemoryVersions};
    use std::sync::Arc;

    const USERS: &str = r#"
        [components.users]
        wasm = "builtin:users"
        routes = ["/users"]
    "#;

    struct Fleet {
        runtime: Runtime,
        backend: Backend,
        _cache: tempfile::TempDir,
    }

    impl Fleet {
        fn new() -> Fleet {
            let cache = tempfile::tempdir().expect("temp dir");
            let runtime = Runtime::new(&EngineConfig {
                max_instances: 16,
                cache_dir: Some(cache.path().to_path_buf()),
                ..EngineConfig::default()
            })
            .expect("engine");
            let backend = Backend::local(Arc::new(MemoryStore::new()))
                .shared_with(Arc::new(MemoryVersions::new()));
            Fleet {
                runtime,
                backend,
                _cache: cache,
            }
        }

        /// A replica started now with `manifest`, as start-up adopts it.
        async fn replica(&self, name: &str, manifest: &str) -> App {
            let manifest: Manifest = manifest.parse().expect("manifest");
            let app = App::load(&manifest, &self.runtime, &self.backend, name).expect("load");
            app.adopt_shared().await.expect("adopt");
            app
        }
    }

    fn live(app: &App) -> String {
        app.components()[0].live.sha256.clone()
    }

    fn wasm(name: &str) -> Vec<u8> {
        crate::builtin::wasm(name).expect("built-in").to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_or_rollback_through_one_replica_reaches_the_others() {
        let fleet = Fleet::new();
        let a = fleet.replica("a", USERS).await;
        let b = fleet.replica("b", USERS).await;
        let v1 = sha256_hex(&wasm("users"));
        let v2 = sha256_hex(&wasm("orders"));
        assert_eq!((live(&a), live(&b)), (v1.clone(), v1.clone()));

        let replaced = a.replace("users", wasm("orders")).await.expect("swap");
        assert!(replaced.swapped);
        assert_eq!(
            live(&a),
            v2,
            "the replica that took the upload swaps at once"
        );
        assert_eq!(live(&b), v1, "the other has not looked yet");
        assert_eq!(b.follow_shared().await.expect("follow"), 1);
        assert_eq!(live(&b), v2);
        assert_eq!(
            a.follow_shared().await.expect("follow"),
            0,
            "nothing left to do"
        );

        let rolled = b.rollback("users").await.expect("rollback");
        assert_eq!((rolled.sha256, live(&b)), (v1.clone(), v1.clone()));
        a.follow_shared().await.expect("follow");
        assert_eq!(live(&a), v1, "a rollback through b reaches a");

        // A later replica serves the store's version, not its manifest's.
        b.replace("users", wasm("orders")).await.expect("swap");
        let c = fleet.replica("c", USERS).await;
        assert_eq!(live(&c), v2);
        assert_eq!(c.components()[0].following, Following::Live);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_that_does_not_compile_is_refused_and_recorded_nowhere() {
        let fleet = Fleet::new();
        let a = fleet.replica("a", USERS).await;
        let b = fleet.replica("b", USERS).await;
        let v1 = live(&a);
        let refused = a.replace("users", b"not a component".to_vec()).await;
        assert!(
            matches!(refused, Err(SwapError::Rejected(_))),
            "{refused:?}"
        );
        assert_eq!(b.follow_shared().await.expect("follow"), 0);
        assert_eq!((live(&a), live(&b)), (v1.clone(), v1));
        let shared = a.shared_live().await.expect("shared").expect("live");
        assert_eq!(shared[0].previous, None, "nothing was recorded");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_deployment_wins_but_an_old_replica_restarting_does_not() {
        let fleet = Fleet::new();
        let old = fleet.replica("old", USERS).await;
        let v1 = live(&old);
        // A new build of the image: the manifest names a file never seen.
        let new_manifest = USERS.replace("builtin:users", "builtin:orders");
        let new = fleet.replica("new", &new_manifest).await;
        let v2 = live(&new);
        assert_ne!(v1, v2);
        old.follow_shared().await.expect("follow");
        assert_eq!(live(&old), v2, "the old replica follows the new deployment");
        // An old replica restarting offers a version the store has seen.
        let restarted = fleet.replica("old-again", USERS).await;
        assert_eq!(
            live(&restarted),
            v2,
            "a restart of the old image does not undo it"
        );
    }
}
