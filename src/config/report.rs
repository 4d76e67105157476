//! `[report]`: the criteria `coexistd report` judges a period of coexistence against
//! (GO only when every one holds). Read with the rest of the configuration by
//! `validate` and `run`, and on its own by `report` ([`ReportCriteria::load`]), which
//! runs where the agents' secrets may not be: it reads `[report]` and the pools' names
//! only.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, HumanDuration, Source};

/// The kinds whose pairs make an interoperability matrix (`coexist_interop_up{kind}`).
pub const MATRIX_KINDS: [&str; 4] = ["sip_im", "sip_presence", "sip_call", "sip_group_im"];

/// What a period must show for GO.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReportCriteria {
    /// Lowest availability of any pool (`min_availability`, default 0.999).
    pub min_availability: f64,
    /// Per role, overriding it (`min_availability_by_role`: `legacy`, `new`).
    pub by_role: BTreeMap<String, f64>,
    /// Per pool, overriding both (`min_availability_by_pool`).
    pub by_pool: BTreeMap<String, f64>,
    /// Lowest availability of any cell of any matrix (`min_interop_availability`,
    /// default 0.99).
    pub min_interop_availability: f64,
    /// Per matrix kind, overriding it (`min_interop_availability_by_kind`).
    pub interop_by_kind: BTreeMap<String, f64>,
    /// No sign-in record may have moved against its plan in this many days before the
    /// period's end (`signin_stable_days`, default 7).
    pub signin_stable_days: u32,
    /// Every certificate seen must stay valid this many days past the period's end
    /// (`min_cert_days`, default 30).
    pub min_cert_days: u32,
    /// The longest period without any agent's data tolerated (`max_data_gap`,
    /// default 15 minutes).
    #[serde(with = "secs")]
    pub max_data_gap: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

impl Default for ReportCriteria {
    fn default() -> Self {
        ReportCriteria {
            min_availability: 0.999,
            by_role: BTreeMap::new(),
            by_pool: BTreeMap::new(),
            min_interop_availability: 0.99,
            interop_by_kind: BTreeMap::new(),
            signin_stable_days: 7,
            min_cert_days: 30,
            max_data_gap: Duration::from_secs(15 * 60),
        }
    }
}

impl ReportCriteria {
    /// The availability `pool` (of `role`) must reach.
    pub fn pool_threshold(&self, pool: &str, role: &str) -> f64 {
        self.by_pool.get(pool).or_else(|| self.by_role.get(role)).copied().unwrap_or(self.min_availability)
    }

    /// The availability every cell of the `kind` matrix must reach.
    pub fn interop_threshold(&self, kind: &str) -> f64 {
        self.interop_by_kind.get(kind).copied().unwrap_or(self.min_interop_availability)
    }

    /// Reads `[report]` (and the pools' names, to check the ones it names) from the
    /// configuration at `path`, ignoring everything else; the defaults without a
    /// `[report]` table.
    pub fn load(path: &Path) -> Result<ReportCriteria, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        let src = Source { origin: &origin, text: &text };
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default)]
            report: Option<RawReport>,
            #[serde(default)]
            pools: Vec<Named>,
        }
        let p: Partial = toml::from_str(&text).map_err(|e| src.toml_err(&e))?;
        let pools: Vec<String> = p.pools.into_iter().map(|n| n.name).collect();
        build(p.report.as_ref(), &pools, &src)
    }
}

/// The `[report]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    min_availability: Option<Spanned<f64>>,
    min_availability_by_role: Option<BTreeMap<String, Spanned<f64>>>,
    min_availability_by_pool: Option<BTreeMap<String, Spanned<f64>>>,
    min_interop_availability: Option<Spanned<f64>>,
    min_interop_availability_by_kind: Option<BTreeMap<String, Spanned<f64>>>,
    signin_stable_days: Option<u32>,
    min_cert_days: Option<u32>,
    max_data_gap: Option<Spanned<HumanDuration>>,
}

fn ratio(v: &Spanned<f64>, key: &str, src: &Source<'_>) -> Result<f64, ConfigError> {
    let x = *v.get_ref();
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(src.err(
            v.span(),
            &format!("report.{key}: {x} is not an availability between 0 and 1 (0.999 = 99.9 %)"),
        ))
    }
}

/// Validates `[report]` against the configured pool names.
pub(super) fn build(
    raw: Option<&RawReport>,
    pools: &[String],
    src: &Source<'_>,
) -> Result<ReportCriteria, ConfigError> {
    let mut c = ReportCriteria::default();
    let Some(r) = raw else { return Ok(c) };
    if let Some(v) = &r.min_availability {
        c.min_availability = ratio(v, "min_availability", src)?;
    }
    for (role, v) in r.min_availability_by_role.iter().flatten() {
        if role != "legacy" && role != "new" {
            return Err(src.err(
                v.span(),
                &format!("report.min_availability_by_role: {role:?} is not a role (legacy, new)"),
            ));
        }
        c.by_role.insert(role.clone(), ratio(v, "min_availability_by_role", src)?);
    }
    for (pool, v) in r.min_availability_by_pool.iter().flatten() {
        if !pools.iter().any(|p| p == pool) {
            return Err(src.err(v.span(), &format!("report.min_availability_by_pool: unknown pool {pool:?}")));
        }
        c.by_pool.insert(pool.clone(), ratio(v, "min_availability_by_pool", src)?);
    }
    if let Some(v) = &r.min_interop_availability {
        c.min_interop_availability = ratio(v, "min_interop_availability", src)?;
    }
    for (kind, v) in r.min_interop_availability_by_kind.iter().flatten() {
        if !MATRIX_KINDS.contains(&kind.as_str()) {
            return Err(src.err(
                v.span(),
                &format!(
                    "report.min_interop_availability_by_kind: {kind:?} has no matrix (one of {})",
                    MATRIX_KINDS.join(", ")
                ),
            ));
        }
        c.interop_by_kind.insert(kind.clone(), ratio(v, "min_interop_availability_by_kind", src)?);
    }
    if let Some(d) = r.signin_stable_days {
        c.signin_stable_days = d;
    }
    if let Some(d) = r.min_cert_days {
        c.min_cert_days = d;
    }
    if let Some(g) = &r.max_data_gap {
        if g.get_ref().0.is_zero() {
            return Err(src.err(g.span(), "report.max_data_gap: must be longer than 0s"));
        }
        c.max_data_gap = g.get_ref().0;
    }
    Ok(c)
}
