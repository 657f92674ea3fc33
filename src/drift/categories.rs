//! Categorical baselines: a lookup or string column's training categories (the top K by
//! frequency) and the shares of each, of every other category and of the default, so drift
//! sees a category whose share changes (a null rate or a mean code would not).

use super::stats::{BaselineError, FeatureBaseline};
use crate::core::manifest::{ColumnKind, InputColumn, Lane, TensorType};

/// A categorical column's baseline categories and how a row names them.
#[derive(Debug, Clone, PartialEq)]
pub struct Categories {
    /// Category names, most frequent in training first.
    pub names: Vec<String>,
    /// How the row holds the category.
    pub source: CategorySource,
}

/// Where a categorical column's value is in a row.
#[derive(Debug, Clone, PartialEq)]
pub enum CategorySource {
    /// A lookup column: its `f32` value is the category's code; `codes[i]` is `names[i]`'s.
    Codes(Vec<f64>),
    /// A string column: its text, at this index among the row's texts.
    Text(usize),
}

impl FeatureBaseline {
    /// A categorical baseline: `{"categories": [k names], "proportions": [k shares, other],
    /// "default_rate"}`, named in rows as `source` says.
    pub(super) fn categorical(
        name: &str,
        v: &serde_json::Value,
        default: Option<f64>,
        col: Option<(&InputColumn, Lane)>,
    ) -> Result<Self, BaselineError> {
        let bad = |what: String| BaselineError(format!("baseline {name}: {what}"));
        let names: Vec<String> = v["categories"]
            .as_array()
            .ok_or_else(|| bad("'categories' is not a list".into()))?
            .iter()
            .map(|c| c.as_str().map(str::to_string).ok_or_else(|| bad("'categories' holds a non-string".into())))
            .collect::<Result<_, _>>()?;
        let proportions: Vec<f64> = v
            .get("proportions")
            .and_then(|a| a.as_array())
            .ok_or_else(|| bad("'proportions' missing".into()))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| bad("'proportions' holds a non-number".into())))
            .collect::<Result<_, _>>()?;
        if proportions.len() != names.len() + 1 {
            return Err(bad(format!(
                "need one proportion per category and one for other (got {} categories, {} proportions)",
                names.len(),
                proportions.len()
            )));
        }
        let source = match col {
            Some((c, _)) if c.kind == ColumnKind::Lookup => {
                let table = c.table.as_ref().ok_or_else(|| bad("a lookup column without a table".into()))?;
                let codes = names
                    .iter()
                    .map(|n| {
                        table
                            .get(n)
                            .map(|&x| f64::from(x))
                            .ok_or_else(|| bad(format!("category '{n}' is not in the column's table")))
                    })
                    .collect::<Result<_, _>>()?;
                CategorySource::Codes(codes)
            }
            Some((c, lane)) if c.kind == ColumnKind::String && lane.ty == TensorType::String => {
                CategorySource::Text(lane.index)
            }
            _ => return Err(bad("categories are for lookup and string columns".into())),
        };
        let default_rate = v.get("default_rate").and_then(|x| x.as_f64()).unwrap_or(0.0);
        let (other, shares) = proportions.split_last().expect("at least the other share");
        let mut expected = Vec::with_capacity(names.len() + 2);
        expected.push(default_rate);
        expected.push(*other);
        expected.extend(shares);
        let total: f64 = expected.iter().sum();
        if total > 0.0 {
            expected.iter_mut().for_each(|e| *e /= total);
        }
        Ok(Self {
            name: name.to_string(),
            edges: Vec::new(),
            categories: Some(Categories { names, source }),
            expected,
            default,
            mean: f64::NAN,
            std: f64::NAN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::Moments;

    fn cat(source: CategorySource) -> FeatureBaseline {
        let v = serde_json::json!({"categories": ["pos", "ecom"], "proportions": [0.5, 0.3, 0.1], "default_rate": 0.1});
        let col: InputColumn = serde_json::from_value(match source {
            CategorySource::Codes(_) => serde_json::json!({"name": "channel", "source": "channel", "kind": "lookup",
                "table": {"pos": 0.0, "ecom": 1.0, "atm": 2.0}, "unknown": -1.0, "missing": {"default": -1.0}}),
            CategorySource::Text(_) => serde_json::json!({"name": "channel", "source": "channel", "kind": "string",
                "missing": {"default": "none"}}),
        })
        .unwrap();
        let lane = match source {
            CategorySource::Codes(_) => Lane { ty: TensorType::Float32, index: 0 },
            CategorySource::Text(i) => Lane { ty: TensorType::String, index: i },
        };
        FeatureBaseline::from_json("channel", &v, col.default_value(), Some((&col, lane))).unwrap()
    }

    #[test]
    fn categories_bucket_by_code_or_text_with_the_rest_in_other() {
        let b = cat(CategorySource::Codes(Vec::new()));
        assert_eq!(b.categories.as_ref().unwrap().source, CategorySource::Codes(vec![0.0, 1.0]));
        assert_eq!(b.expected, vec![0.1, 0.1, 0.5, 0.3], "[default, other, pos, ecom]");
        assert_eq!(
            [
                b.bucket_of(-1.0, &[]),
                b.bucket_of(f64::NAN, &[]),
                b.bucket_of(0.0, &[]),
                b.bucket_of(1.0, &[]),
                b.bucket_of(2.0, &[])
            ],
            [0, 0, 2, 3, 1]
        );
        let t = cat(CategorySource::Text(1));
        let row = |s: &str| vec!["x".to_string(), s.to_string()];
        assert_eq!(
            [t.bucket_of(0.0, &row("ecom")), t.bucket_of(0.0, &row("kiosk")), t.bucket_of(f64::NAN, &row("none"))],
            [3, 1, 0]
        );
    }

    #[test]
    fn a_category_share_change_moves_psi_and_other_counts_as_out_of_range() {
        let b = cat(CategorySource::Text(0));
        let mut same = Moments::new(b.buckets());
        let mut moved = Moments::new(b.buckets());
        for (text, n) in [("none", 100), ("atm", 100), ("pos", 500), ("ecom", 300)] {
            let v = if text == "none" { f64::NAN } else { 0.0 };
            for _ in 0..n {
                same.observe(&b, v, &[text.to_string()]);
            }
        }
        for (text, n) in [("none", 100), ("atm", 100), ("pos", 200), ("ecom", 600)] {
            let v = if text == "none" { f64::NAN } else { 0.0 };
            for _ in 0..n {
                moved.observe(&b, v, &[text.to_string()]);
            }
        }
        let s = same.stats(&b);
        assert!(s.psi < 1e-9 && s.ks < 1e-9, "{s:?}");
        assert!((s.out_of_range_rate - 0.1).abs() < 1e-12 && (s.default_rate - 0.1).abs() < 1e-12, "{s:?}");
        let m = moved.stats(&b);
        assert!(m.psi > 0.25, "{m:?}");
        assert!((m.ks - 1.0 / 3.0).abs() < 1e-12, "a third of the non-default mass moved from pos to ecom: {m:?}");
        assert!(m.mean.is_nan(), "no moments of categories");
    }

    #[test]
    fn a_lookup_baseline_naming_a_category_outside_the_table_is_refused() {
        let col: InputColumn = serde_json::from_value(serde_json::json!({"name": "c", "source": "c", "kind": "lookup",
            "table": {"a": 0.0}, "missing": "reject"}))
        .unwrap();
        let v = serde_json::json!({"categories": ["b"], "proportions": [0.9, 0.1]});
        let lane = Lane { ty: TensorType::Float32, index: 0 };
        let e = FeatureBaseline::from_json("c", &v, None, Some((&col, lane))).unwrap_err();
        assert!(e.0.contains("category 'b' is not in the column's table"), "{e}");
        let number: InputColumn =
            serde_json::from_value(serde_json::json!({"name": "c", "source": "c", "kind": "number"})).unwrap();
        let e = FeatureBaseline::from_json("c", &v, None, Some((&number, lane))).unwrap_err();
        assert!(e.0.contains("categories are for lookup and string columns"), "{e}");
    }
}
