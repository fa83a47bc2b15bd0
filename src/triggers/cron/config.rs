//! `kind = "cron"`.

use serde::{Deserialize, Serialize};

use super::schedule::Schedule;
use crate::triggers::Target;

/// A scheduled trigger.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// Always "cron".
    pub kind: String,
    /// Cron expression with seconds ("0 */5 * * * *"), @hourly/@daily/@weekly/@monthly/@yearly,
    /// "@every 30s" or "rate(5 minutes)".
    pub schedule: String,
    /// IANA timezone of the cron expression. Default UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Topic to publish each tick to. Exactly one of `topic` and `function`.
    pub topic: Option<String>,
    /// Function to deliver each tick to directly.
    pub function: Option<String>,
    /// The event's `detail`. Default `{}`.
    #[serde(default)]
    pub payload: Option<toml::Table>,
    /// What to do with ticks missed while no `sluice up` ran: `skip`, `fire_once` (the most
    /// recent) or `fire_all` (up to `max_catchup`). Default `skip`.
    #[serde(default)]
    pub missed: Missed,
    /// Most missed ticks fired by `fire_all`; the newest are kept. Default 100.
    #[serde(default = "default_max_catchup")]
    pub max_catchup: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    #[default]
    Skip,
    FireOnce,
    FireAll,
}

impl Missed {
    /// The name as `missed` spells it in a trigger file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::FireOnce => "fire_once",
            Self::FireAll => "fire_all",
        }
    }
}

fn default_timezone() -> String {
    "UTC".to_owned()
}
const fn default_max_catchup() -> usize {
    100
}

impl CronConfig {
    /// The schedule and its timezone: `0 * * * * * (UTC)`.
    pub fn source(&self) -> String {
        format!("{} ({})", self.schedule, self.timezone)
    }

    pub fn target(&self) -> Target {
        crate::triggers::target_of(&self.topic, &self.function)
    }

    /// Semantic checks; the offending field and what is wrong.
    pub fn check(&self) -> Result<Schedule, (String, String)> {
        let timezone: chrono_tz::Tz = self.timezone.parse().map_err(|_| {
            ("timezone".to_owned(), format!("{:?} is not an IANA timezone name (e.g. \"Europe/Berlin\", \"UTC\")", self.timezone))
        })?;
        let schedule = Schedule::parse(&self.schedule, timezone).map_err(|m| ("schedule".to_owned(), m))?;
        crate::triggers::check_target(&self.topic, &self.function)?;
        if self.max_catchup == 0 || self.max_catchup > 10_000 {
            return Err(("max_catchup".to_owned(), format!("{} is out of range: use 1 to 10000", self.max_catchup)));
        }
        Ok(schedule)
    }
}
