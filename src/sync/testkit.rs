//! What the planners' unit tests share: both simulators on 127.0.0.1, the real clients logged
//! in to them, a job config read from params as a job's are, and the Run a layout is given.

use std::sync::Arc;

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::config::JobConfig;
use crate::http::{RecordedSleep, RetryPolicy};
use crate::params::RawParams;
use crate::sim::tanium::{TaniumSim, TaniumSimOptions};
use crate::sim::tc::{TcSim, TcSimOptions};
use crate::tanium::model::ApiGeneration;
use crate::tanium::TaniumClient;
use crate::tc::client::TcClient;
use crate::tc::model::Indicator;

use super::label_book::LabelBook;
use super::source::Source;
use super::{Checkpoint, Layout, Run, SyncOptions};

pub(super) struct Kit {
    _tanium_sim: TaniumSim,
    _tc_sim: TcSim,
    pub config: JobConfig,
    pub checkpoint: Checkpoint,
    pub opts: SyncOptions,
    pub tc: TcClient,
    pub tanium: TaniumClient,
    pub source: Source,
    pub lists: super::Lists,
    _temp: tempfile::TempDir,
}

impl Kit {
    /// TC holding `indicators`; the job's params over the defaults (`null` drops one); a dry
    /// run unless `dry_run: false` says otherwise.
    pub fn new(indicators: Vec<Indicator>, params: Value) -> Kit {
        let temp = tempfile::tempdir().unwrap();
        let tc_opts = TcSimOptions::default();
        let t_opts = TaniumSimOptions::new(ApiGeneration::V4);
        let tc_sim = TcSim::start(tc_opts.clone()).unwrap();
        tc_sim.load(indicators);
        let tanium_sim = TaniumSim::start(t_opts.clone()).unwrap();
        let mut raw = json!({
            "tc_api_path": tc_sim.api_path(),
            "tc_api_access_id": tc_opts.access_id,
            "tc_api_secret_key": tc_opts.secret_key,
            "api_user": "unit",
            "tanium_address": tanium_sim.url(),
            "tanium_username": t_opts.username,
            "tanium_password": t_opts.password,
            "tanium_source": "ThreatConnect",
            "last_modified": "2026-01-01T00:00:00Z",
            "tanium_labels": "",
            "tc_temp_path": temp.path().display().to_string(),
        });
        for (k, v) in params.as_object().cloned().unwrap_or_default() {
            raw[k] = v;
        }
        let raw: RawParams = raw
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = JobConfig::from_params(&raw).unwrap();
        let now = OffsetDateTime::now_utc();
        let checkpoint = Checkpoint::load(&raw, now).unwrap().0;
        let policy = RetryPolicy::quick(Arc::new(RecordedSleep::default()));
        let tc = TcClient::new(&config.tc, policy.clone()).unwrap();
        let tanium = TaniumClient::connect(&config.tanium, policy).unwrap();
        let id = tanium.find_or_create_source("ThreatConnect").unwrap().id;
        Kit {
            _tanium_sim: tanium_sim,
            _tc_sim: tc_sim,
            opts: SyncOptions {
                dry_run: raw.get("dry_run").is_none_or(|v| v != &json!(false)),
                out_dir: None,
                now,
            },
            config,
            checkpoint,
            tc,
            tanium,
            source: Source {
                name: "ThreatConnect".into(),
                id: Some(id),
                created: false,
            },
            lists: super::Lists::Off,
            _temp: temp,
        }
    }

    pub fn run(&self, full: bool) -> Run<'_> {
        Run {
            config: &self.config,
            checkpoint: &self.checkpoint,
            opts: &self.opts,
            tc: &self.tc,
            tanium: &self.tanium,
            source: &self.source,
            layout: Layout::of(&self.config),
            full: full.then_some(super::Full::EmptySource),
            lists: &self.lists,
        }
    }

    /// The label book as a run opens it.
    pub fn book(&self) -> LabelBook {
        let rules = &self.config.labels;
        LabelBook::open(
            &self.tanium,
            rules,
            self.checkpoint.managed(rules),
            None,
            false,
            self.opts.dry_run,
        )
    }
}

/// A Host indicator of the Org owner, modified on 2026-11-01.
pub(super) fn host(id: i64, name: &str) -> Indicator {
    Indicator {
        id,
        owner_name: "Org".into(),
        type_name: "Host".into(),
        summary: name.into(),
        host_name: Some(name.into()),
        confidence: Some(60),
        active: true,
        last_modified: "2026-11-01T00:00:00Z".into(),
        ..Indicator::default()
    }
}
