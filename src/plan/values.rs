//! Small value types of the plan that check themselves while they are deserialized, so that
//! a bad value is reported at its own line and column.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A count that must be at least 1 (messages, instances, nth, times...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Count(#[schemars(range(min = 1))] u64);

impl Count {
    /// A count; panics on zero, which only code (never a plan) can ask for.
    pub const fn new(n: u64) -> Count {
        assert!(n > 0, "a Count is at least 1");
        Count(n)
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if n < 1 {
            return Err(de::Error::custom(format!(
                "must be at least 1 (got {n}); write a positive whole number"
            )));
        }
        Ok(Count(n as u64))
    }
}

/// A produce rate: `unlimited` or `N/s`.
#[derive(Debug, Clone, Copy, PartialEq, Default, JsonSchema)]
#[schemars(with = "String")]
pub enum Rate {
    /// As fast as the broker takes them.
    #[default]
    Unlimited,
    /// At most this many messages per second.
    PerSecond(f64),
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(Rate::Unlimited);
        }
        let fix = "write a rate such as `500/s`, or `unlimited`";
        let number = s
            .strip_suffix("/s")
            .ok_or_else(|| format!("bad rate `{s}`: {fix}"))?;
        match number.trim().parse::<f64>() {
            // The pace waits 1/n s between messages: slower than one message per `LONGEST`
            // never sends a second one in any run, and 1/n overflows a Duration near 0.
            Ok(n) if n.is_finite() && n > 0.0 && 1.0 / n > super::LONGEST.as_secs_f64() => Err(
                format!("bad rate `{s}`: slower than one message per 7 days; {fix}"),
            ),
            Ok(n) if n > 0.0 && n.is_finite() => Ok(Rate::PerSecond(n)),
            _ => Err(format!("bad rate `{s}`: {fix}")),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::PerSecond(n) => write!(f, "{n}/s"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Which consumer instances an action hits: `consumer` (all) or `consumer[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub enum Target {
    /// Every instance.
    AllInstances,
    /// One instance, by index from 0.
    Instance(u32),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write `consumer` (every instance) or `consumer[0]` (one instance)";
        if s == "consumer" {
            return Ok(Target::AllInstances);
        }
        s.strip_prefix("consumer[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
            .map(Target::Instance)
            .ok_or_else(|| format!("bad target `{s}`: {fix}"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::AllInstances => f.write_str("consumer"),
            Target::Instance(i) => write!(f, "consumer[{i}]"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_accepts_per_second_and_unlimited() {
        assert_eq!("500/s".parse::<Rate>(), Ok(Rate::PerSecond(500.0)));
        assert_eq!("unlimited".parse::<Rate>(), Ok(Rate::Unlimited));
        assert!("500".parse::<Rate>().is_err());
        assert!("0/s".parse::<Rate>().is_err());
    }

    #[test]
    fn a_rate_too_slow_for_any_run_is_rejected_before_its_pace_overflows() {
        // Found by tests/plan_fuzz.rs: `5e-324/s` loaded, and pacing the second message
        // panicked converting 1/rate seconds to a Duration.
        for slow in ["5e-324/s", "1e-300/s", "0.000001/s"] {
            let e = slow.parse::<Rate>().unwrap_err();
            assert!(e.contains("one message per 7 days"), "{e}");
        }
        assert_eq!("0.00001/s".parse::<Rate>(), Ok(Rate::PerSecond(0.00001)));
        assert_eq!("1e308/s".parse::<Rate>(), Ok(Rate::PerSecond(1e308)));
    }

    #[test]
    fn target_names_all_or_one_instance() {
        assert_eq!("consumer".parse::<Target>(), Ok(Target::AllInstances));
        assert_eq!("consumer[2]".parse::<Target>(), Ok(Target::Instance(2)));
        assert!("consumer[x]".parse::<Target>().is_err());
        assert!("producer".parse::<Target>().is_err());
    }
}
