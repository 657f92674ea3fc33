//! Configuration of an entity whose online features live in a Feast Redis online store
//! (`[enrich.entities.feast]`).

use serde::{Deserialize, Serialize};

/// The type of a Feast join key's values (the entity's `value_type` in Feast).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// `ValueType.STRING`.
    #[default]
    String,
    /// `ValueType.INT64`.
    Int64,
    /// `ValueType.INT32`.
    Int32,
}

/// One join key of the Feast entity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinKeyConfig {
    /// The join key's name in Feast (`Entity(join_keys=[...])`).
    pub name: String,
    /// Dotted event path of its value. Unset: the entity's `key` for the first join key,
    /// the join key's name for the others.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
    /// `string`, `int64` or `int32`, as the Feast entity declares it.
    #[serde(rename = "type", default)]
    pub kind: KeyType,
}

/// The freshness limit of one feature view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ViewAge {
    /// Feature view name (with its `_v{N}` suffix when Feast's online versioning is on).
    pub name: String,
    /// The view's features count as missing when its `_ts` is older than this (s).
    pub max_age_s: u64,
}

/// Features read from Feast's Redis layout instead of verdict's own hashes: the entity's
/// `features` are `feature_view:feature` names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeastSource {
    /// The Feast project (`project` in feature_store.yaml).
    pub project: String,
    /// The entity's join keys (one, or several for a composite key), in any order.
    pub join_keys: Vec<JoinKeyConfig>,
    /// `entity_key_serialization_version` of feature_store.yaml (2 or 3; Feast's default is 3).
    #[serde(default = "three")]
    pub entity_key_serialization_version: u32,
    /// Per feature view freshness limits; a view not listed has the entity's `max_feature_age_s`.
    #[serde(default)]
    pub views: Vec<ViewAge>,
}

fn three() -> u32 {
    3
}

impl FeastSource {
    /// Each join key's event path (`key`: the entity's key path, the first one's default).
    pub fn fields<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.join_keys.iter().enumerate().map(move |(i, k)| match (i, k.field.as_str()) {
            (0, "") => key,
            (_, "") => k.name.as_str(),
            (_, f) => f,
        })
    }

    /// The feature views `features` name, in first-use order.
    pub fn views_of(features: &[String]) -> Vec<&str> {
        let mut views: Vec<&str> = Vec::new();
        for f in features {
            let view = f.split_once(':').map_or("", |(v, _)| v);
            if !views.contains(&view) {
                views.push(view);
            }
        }
        views
    }

    /// Every problem, with its path (`p`: the entity's path; `key`, `features`: the entity's).
    pub fn validate(&self, p: &str, key: &str, features: &[String]) -> Vec<String> {
        let mut e = Vec::new();
        if self.project.is_empty() {
            e.push(format!("{p}.feast.project: must not be empty"));
        }
        if self.join_keys.is_empty() {
            e.push(format!("{p}.feast.join_keys: must name at least one join key"));
        }
        for (i, k) in self.join_keys.iter().enumerate() {
            if k.name.is_empty() {
                e.push(format!("{p}.feast.join_keys[{i}].name: must not be empty"));
            }
            if self.join_keys[..i].iter().any(|o| o.name == k.name) {
                e.push(format!("{p}.feast.join_keys[{i}].name: '{}' is used twice", k.name));
            }
        }
        if let Some(first) = self.join_keys.first().filter(|k| !k.field.is_empty() && k.field != key) {
            e.push(format!(
                "{p}.feast.join_keys[0].field: '{}' differs from the entity's key '{key}' (the first join key is \
                 the entity's key; leave its field unset)",
                first.field
            ));
        }
        if !matches!(self.entity_key_serialization_version, 2 | 3) {
            e.push(format!(
                "{p}.feast.entity_key_serialization_version: {} is not supported (2 or 3)",
                self.entity_key_serialization_version
            ));
        }
        for (i, f) in features.iter().enumerate() {
            if !f.split_once(':').is_some_and(|(v, n)| !v.is_empty() && !n.is_empty()) {
                e.push(format!("{p}.features[{i}]: '{f}' is not 'feature_view:feature' (a Feast entity's features)"));
            }
        }
        let views = Self::views_of(features);
        for (i, v) in self.views.iter().enumerate() {
            if !views.contains(&v.name.as_str()) {
                e.push(format!(
                    "{p}.feast.views[{i}].name: '{}' is not the view of any of the entity's features",
                    v.name
                ));
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_every_bad_key_at_once() {
        let src = FeastSource {
            project: String::new(),
            join_keys: vec![
                JoinKeyConfig { name: "card_id".into(), field: "card.other".into(), kind: KeyType::Int64 },
                JoinKeyConfig { name: "card_id".into(), field: String::new(), kind: KeyType::String },
            ],
            entity_key_serialization_version: 1,
            views: vec![ViewAge { name: "nowhere".into(), max_age_s: 60 }],
        };
        let features = ["stats:a".to_string(), "no_view".to_string()];
        let p = "enrich.entities[0]";
        let errors = src.validate(p, "card.id", &features);
        for path in [
            "enrich.entities[0].feast.project:",
            "enrich.entities[0].feast.join_keys[1].name: 'card_id' is used twice",
            "enrich.entities[0].feast.join_keys[0].field: 'card.other' differs",
            "enrich.entities[0].feast.entity_key_serialization_version: 1",
            "enrich.entities[0].features[1]: 'no_view'",
            "enrich.entities[0].feast.views[0].name: 'nowhere'",
        ] {
            assert!(errors.iter().any(|e| e.starts_with(path)), "{path} in {errors:#?}");
        }
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }

    #[test]
    fn join_key_fields_default_to_the_entity_key_then_their_names() {
        let src: FeastSource = toml::from_str(
            r#"project = "p"
join_keys = [{ name = "zone_id" }, { name = "driver_id", type = "int64" }, { name = "m", field = "merchant.id" }]"#,
        )
        .unwrap();
        assert_eq!(src.entity_key_serialization_version, 3);
        assert_eq!(src.fields("zone.id").collect::<Vec<_>>(), ["zone.id", "driver_id", "merchant.id"]);
        assert!(src.validate("e", "zone.id", &["v:f".into()]).is_empty());
    }
}
