//! What one query's plans need wherever they run (issue 26): the snapshot they read, the
//! series the caller may read, the sample limit and its counter, the deadline, and where
//! annotations go. An [`Engine`] makes one for its query; a process that runs part of
//! another process's plan makes one from [`QuiverQueryExt`], the settings that travel
//! with the plan (datafusion-distributed sends a session's config extensions with every
//! task, as gRPC metadata).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use base64::Engine as _;
use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use roaring::RoaringBitmap;

use super::Cancel;
use super::PromqlError;
use super::engine::Engine;
use super::kernels::annotations::Annotator;
use crate::model::Matcher;
use crate::storage::{Snapshot, Storage};

/// One query's scope.
#[derive(Clone)]
pub(crate) struct QueryScope {
    pub storage: Arc<Storage>,
    pub snapshot: Snapshot,
    /// The series the caller may read (`None`: all).
    pub allowed: Option<RoaringBitmap>,
    /// Samples read so far, against `max_samples`.
    pub charged: Arc<AtomicUsize>,
    pub max_samples: usize,
    pub cancel: Cancel,
    pub annotator: Annotator,
    /// A task of another process's plan: its operators hand their annotations and the
    /// samples they read back to that process in their metrics ([`super::plan`]'s
    /// `report`), since this scope's annotator and counter end with the task.
    pub report: bool,
}

extensions_options! {
    /// The query settings a plan carries to the processes that run its tasks.
    pub struct QuiverQueryExt {
        /// The tenant whose storage the plan reads.
        pub tenant: String, default = "default".to_string()
        /// Samples the tasks may still read (the query's limit less what it has read).
        pub max_samples: usize, default = 50_000_000
        /// Time left until the query's deadline, in milliseconds (`u64::MAX`: none).
        pub timeout_ms: u64, default = 120_000
        /// The caller's enforced matchers: base64 of a JSON list of `[name, op, value]`
        /// (empty: none). Header-safe whatever the label values hold.
        pub enforced: String, default = String::new()
        /// The distributed run this task belongs to (a ULID), which its worker stops
        /// when the coordinator goes away.
        pub query_id: String, default = String::new()
        /// How far the planner's storage had read each shard's WAL (`shard:segment,…`):
        /// a task first waits until its own storage has read as far.
        pub positions: String, default = String::new()
    }
}

impl ConfigExtension for QuiverQueryExt {
    const PREFIX: &'static str = "quiver";
}

impl QueryScope {
    /// `engine`'s query.
    pub(crate) fn of(engine: &Engine) -> QueryScope {
        QueryScope {
            storage: engine.storage.clone(),
            snapshot: engine.snapshot().clone(),
            allowed: engine.allowed().cloned(),
            charged: engine.loaded(),
            max_samples: engine.opts.max_samples,
            cancel: engine.opts.cancel.clone(),
            annotator: engine.annotator(),
            report: false,
        }
    }

    /// A scope on this process for tasks of a plan made elsewhere: `storage` is the
    /// tenant's here, its snapshot taken now, the enforced matchers resolved in its
    /// index, the limit and deadline what the planner had left.
    /// `stop`: the query's token on this process, when it tracks the query's
    /// coordinator (the task then stops as soon as that goes away).
    pub(crate) fn from_ext(
        storage: Arc<Storage>,
        ext: &QuiverQueryExt,
        stop: Option<&Cancel>,
    ) -> Result<QueryScope, PromqlError> {
        let enforced = decode_matchers(&ext.enforced)?;
        let allowed = (!enforced.is_empty()).then(|| storage.catalog().select(&enforced));
        Ok(QueryScope {
            snapshot: storage.snapshot(),
            storage,
            allowed,
            charged: Default::default(),
            max_samples: ext.max_samples,
            cancel: match stop {
                Some(c) => c.sharing(Duration::from_millis(ext.timeout_ms)),
                None => Cancel::after(Duration::from_millis(ext.timeout_ms)),
            },
            annotator: Annotator::default(),
            report: true,
        })
    }
}

impl QueryScope {
    /// A SQL statement's scope on the process that plans it: what its tasks elsewhere
    /// carry (the caller's series, the samples limit, the deadline).
    pub(crate) fn of_statement(
        storage: Arc<Storage>,
        allowed: Option<RoaringBitmap>,
        max_samples: usize,
        cancel: Cancel,
    ) -> QueryScope {
        QueryScope {
            snapshot: storage.snapshot(),
            storage,
            allowed,
            charged: Default::default(),
            max_samples,
            cancel,
            annotator: Annotator::default(),
            report: false,
        }
    }
}

/// The settings for tasks of the query `scope` plans, for `tenant` and its enforced
/// `matchers`.
pub(crate) fn ext_for(scope: &QueryScope, tenant: &str, matchers: &[Matcher]) -> QuiverQueryExt {
    let read = scope.charged.load(std::sync::atomic::Ordering::Relaxed);
    QuiverQueryExt {
        tenant: tenant.to_string(),
        max_samples: scope.max_samples.saturating_sub(read),
        timeout_ms: scope
            .cancel
            .remaining()
            .map_or(u64::MAX, |d| d.as_millis().min(u64::MAX as u128 - 1) as u64),
        enforced: encode_matchers(matchers),
        query_id: String::new(),
        positions: String::new(),
    }
}

fn encode_matchers(ms: &[Matcher]) -> String {
    if ms.is_empty() {
        return String::new();
    }
    let list: Vec<[&str; 3]> = ms
        .iter()
        .map(|m| [m.name.as_str(), m.op_str(), m.value.as_str()])
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(serde_json::to_vec(&list).expect("strings serialise"))
}

fn decode_matchers(text: &str) -> Result<Vec<Matcher>, PromqlError> {
    if text.is_empty() {
        return Ok(vec![]);
    }
    let bad = |e: String| PromqlError::exec(format!("enforced matchers of a task: {e}"));
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|e| bad(e.to_string()))?;
    let list: Vec<[String; 3]> = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    list.into_iter()
        .map(
            |[name, op, value]| match Matcher::from_op(name, &op, &value) {
                Some(m) => m.map_err(|e| bad(e.to_string())),
                None => Err(bad(format!("unknown operator {op:?}"))),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::common::config::{ConfigExtension, ConfigOptions, ExtensionOptions};
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };

    use super::*;
    use crate::promql::engine::Ctx;
    use crate::promql::plan::{PlanCodec, df_error, tests::storage, tests::storage_of};
    use crate::promql::{QueryOptions, Steps};

    /// The settings survive what carries them between processes: each entry written as
    /// text and set on a fresh session's options.
    #[test]
    fn settings_travel_as_text() {
        let sent = QuiverQueryExt {
            tenant: "team-a".into(),
            max_samples: 1234,
            timeout_ms: 5000,
            enforced: encode_matchers(&[
                Matcher::regex("namespace", "team-a-.*|\"quoted\"", false).unwrap(),
                Matcher::not_equal("zone", "ünïcode,=;"),
            ]),
            query_id: "q1".into(),
            positions: "0:12,3:4".into(),
        };
        let mut got = ConfigOptions::new();
        got.extensions.insert(QuiverQueryExt::default());
        for e in sent.entries() {
            let v = e.value.unwrap();
            assert!(v.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{v}");
            got.set(&format!("{}.{}", QuiverQueryExt::PREFIX, e.key), &v)
                .unwrap();
        }
        let got = got.extensions.get::<QuiverQueryExt>().unwrap();
        assert_eq!(got.tenant, "team-a");
        assert_eq!((got.max_samples, got.timeout_ms), (1234, 5000));
        assert_eq!(got.positions, "0:12,3:4");
        let ms = decode_matchers(&got.enforced).unwrap();
        assert_eq!(ms.len(), 2);
        assert!(ms[0].matches("\"quoted\"") && !ms[0].matches("team-b-x"));
        assert!(!ms[1].matches("ünïcode,=;") && ms[1].matches("other"));
        assert!(decode_matchers("not base64!").is_err());
    }

    /// A plan's tasks run in a scope rebuilt from its settings: the limit and deadline the
    /// planner had left, and the caller's enforced matchers, hold there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_keep_the_querys_limits_and_matchers() {
        let (a, b) = (storage().await, storage_of(4, (0..8).rev().collect()).await);
        let q = "sum by (job) (rate(http_requests[10m]))";
        let ea = Engine::new(a.clone(), QueryOptions::default());
        let ctx = Ctx {
            steps: Steps::new(0, 3_000_000, 60_000),
            query_start: 0,
            query_end: 3_000_000,
            lookback: 300_000,
            is_range: true,
            query_step: 60_000,
            evaluate: false,
        };
        let lowered = ea.lower(&Engine::parse(q).unwrap(), ctx).unwrap().unwrap();
        let session = ea.session().unwrap();
        let plan = session
            .state()
            .create_physical_plan(&lowered.plan)
            .await
            .unwrap();
        let bytes =
            physical_plan_to_bytes_with_extension_codec(plan, &PlanCodec::new(&ea)).unwrap();
        let task_ctx = session.task_ctx();
        let run = |ext: QuiverQueryExt| {
            let (b, bytes, task) = (b.clone(), bytes.clone(), task_ctx.clone());
            async move {
                let scope = QueryScope::from_ext(b, &ext, None).map_err(|e| e.to_string())?;
                let codec = PlanCodec::of(&scope);
                let plan = physical_plan_from_bytes_with_extension_codec(&bytes, &task, &codec)
                    .map_err(|e| df_error(e).to_string())?;
                let rows: usize = datafusion::physical_plan::collect(plan, task)
                    .await
                    .map_err(|e| df_error(e).to_string())?
                    .iter()
                    .map(|b| b.num_rows())
                    .sum();
                Ok::<_, String>(rows)
            }
        };
        let full = ext_for(&QueryScope::of(&ea), "default", &[]);
        assert_eq!(full.timeout_ms, u64::MAX, "no deadline here");
        let rows = run(full.clone()).await.unwrap();
        let here =
            physical_plan_from_bytes_with_extension_codec(&bytes, &task_ctx, &PlanCodec::new(&ea))
                .unwrap();
        let want: usize = datafusion::physical_plan::collect(here, task_ctx.clone())
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert!(want > 0);
        assert_eq!(rows, want);
        let few = QuiverQueryExt {
            max_samples: 10,
            ..full.clone()
        };
        let err = run(few).await.unwrap_err();
        assert_eq!(err, PromqlError::TooManySamples.to_string());
        let late = QuiverQueryExt {
            timeout_ms: 0,
            ..full.clone()
        };
        assert_eq!(
            run(late).await.unwrap_err(),
            PromqlError::Timeout.to_string()
        );
        // A caller who may read job="api" only: the plan lists job="app" too, refused.
        let api_only = QuiverQueryExt {
            enforced: encode_matchers(&[Matcher::equal("job", "api")]),
            ..full
        };
        let err = run(api_only).await.unwrap_err();
        assert!(err.contains("snapshot skew"), "{err}");
    }
}
