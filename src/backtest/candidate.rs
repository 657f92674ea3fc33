//! The candidates of a backtest: each is a name, a config (the baseline's layered with the
//! candidate's own files, its model directory set) and a rules file. `--candidate` gives one
//! as `name=NAME,model=DIR,rules=FILE,config=FILE`, repeatable, so several variants are
//! compared against the baseline in one pass over the events.

use std::path::PathBuf;

use crate::config::Config;

/// One candidate, ready to run.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its name in the report.
    pub name: String,
    /// Its config: model, decide bands (decode and enrich are the baseline's).
    pub config: Config,
    /// Its rules file (None: bands alone).
    pub rules: Option<PathBuf>,
}

/// A `--candidate` argument: what differs from the baseline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateSpec {
    /// `name=`: its name in the report (default: by position).
    pub name: Option<String>,
    /// `model=`: model directory (default: the baseline's).
    pub model: Option<PathBuf>,
    /// `rules=`: rules file (default: `rules.file` of its config when that differs from the
    /// baseline's, else the baseline's rules).
    pub rules: Option<PathBuf>,
    /// `config=` (repeatable): config files layered over the baseline's, in order.
    pub configs: Vec<PathBuf>,
}

impl CandidateSpec {
    /// Parses `key=value` pairs separated by commas; keys `name`, `model`, `rules` (once
    /// each) and `config` (repeatable).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut spec = Self::default();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!("'{pair}': expected key=value (keys: name, model, rules, config)"));
            };
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                return Err(format!("'{key}' has no value"));
            }
            match key {
                "name" => once(&mut spec.name, value.to_string(), key)?,
                "model" => once(&mut spec.model, PathBuf::from(value), key)?,
                "rules" => once(&mut spec.rules, PathBuf::from(value), key)?,
                "config" => spec.configs.push(PathBuf::from(value)),
                other => return Err(format!("unknown key '{other}' (keys: name, model, rules, config)")),
            }
        }
        if spec == Self::default() {
            return Err("empty: give at least one of name, model, rules, config".into());
        }
        Ok(spec)
    }
}

/// Sets `slot` to `value` unless `key` already set it.
fn once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), String> {
    match slot.replace(value) {
        Some(_) => Err(format!("'{key}' given twice")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_its_model_rules_and_config_layers() {
        let s = CandidateSpec::parse("name=lower, config=a.toml,model=models/demo-nan,config=b.toml").unwrap();
        assert_eq!(s.name.as_deref(), Some("lower"));
        assert_eq!(s.model, Some(PathBuf::from("models/demo-nan")));
        assert_eq!(s.rules, None);
        assert_eq!(s.configs, [PathBuf::from("a.toml"), PathBuf::from("b.toml")]);
    }

    #[test]
    fn a_spec_with_an_unknown_or_repeated_key_is_refused() {
        assert!(CandidateSpec::parse("name=a,thresholds=x").unwrap_err().contains("unknown key 'thresholds'"));
        assert!(CandidateSpec::parse("model=a,model=b").unwrap_err().contains("'model' given twice"));
        assert!(CandidateSpec::parse("name=a,name=b").unwrap_err().contains("'name' given twice"));
        assert!(CandidateSpec::parse("models/demo").unwrap_err().contains("expected key=value"));
        assert!(CandidateSpec::parse("rules=").unwrap_err().contains("no value"));
        assert!(CandidateSpec::parse("").unwrap_err().contains("empty"));
    }
}
