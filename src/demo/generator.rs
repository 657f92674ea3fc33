//! Synthetic card transactions: heavy-tailed card activity, amounts, merchants,
//! countries, devices, and a small fraud rate with bursts.
//!
//! The same generator feeds the demo, the tests, the benchmarks and
//! `ops/model/train.py` (through `verdict generate --labels`), so the demo model is
//! trained on the distribution it later scores.

use apache_avro::types::Value as AvroValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};
use serde::Serialize;

/// Merchant categories with their fraud log-odds contribution.
pub const CATEGORIES: [(&str, f64); 8] = [
    ("grocery", -0.8),
    ("fuel", -0.5),
    ("restaurant", -0.4),
    ("fashion", 0.1),
    ("travel", 0.5),
    ("gaming", 0.8),
    ("electronics", 1.0),
    ("digital", 1.2),
];
/// Channels.
pub const CHANNELS: [&str; 3] = ["pos", "ecom", "atm"];
/// Device types.
pub const DEVICE_TYPES: [&str; 4] = ["mobile", "desktop", "tablet", "emulator"];
const COUNTRIES: [&str; 8] = ["DE", "FR", "NL", "ES", "IT", "GB", "US", "BR"];

/// A device seen on an e-commerce transaction.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Device {
    /// Device fingerprint.
    pub id: String,
    /// Device class.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One transaction event (field names as in `schemas/transaction.avsc`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transaction {
    /// Unique id.
    pub event_id: String,
    /// Card (the entity key).
    pub card_id: String,
    /// Merchant.
    pub merchant_id: String,
    /// Event time, ms since epoch.
    pub event_time: i64,
    /// Amount in `currency`.
    pub amount: f64,
    /// ISO currency.
    pub currency: String,
    /// Merchant category.
    pub merchant_category: String,
    /// pos / ecom / atm.
    pub channel: String,
    /// Merchant country.
    pub country: String,
    /// Issuing country of the card.
    pub card_country: String,
    /// Merchant country differs from card country.
    pub cross_border: bool,
    /// Card physically present.
    pub card_present: bool,
    /// Days since card issue, unknown for some issuers.
    pub card_age_days: Option<i32>,
    /// Distance from the card holder's usual location, when known.
    pub distance_km: Option<f64>,
    /// Merchant risk score from an upstream system.
    pub merchant_risk: f64,
    /// Device, for e-commerce.
    pub device: Option<Device>,
    /// Ground truth, only when generating training data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<u8>,
}

/// Deterministic generator (same seed → same events).
pub struct Generator {
    rng: SmallRng,
    cards: Zipf<f64>,
    merchants: Zipf<f64>,
    amount: LogNormal<f64>,
    next_id: u64,
    time_ms: i64,
    burst_left: u32,
    burst_merchant: u64,
    testing_left: u32,
    testing_card: u64,
    labels: bool,
}

impl Generator {
    /// A generator over `n_cards` cards, starting at `start_ms`.
    pub fn new(seed: u64, n_cards: u64, start_ms: i64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            cards: Zipf::new(n_cards as f64, 1.1).expect("valid zipf"),
            merchants: Zipf::new(2000.0, 1.0).expect("valid zipf"),
            amount: LogNormal::new(3.5, 1.1).expect("valid lognormal"),
            next_id: 0,
            time_ms: start_ms,
            burst_left: 0,
            burst_merchant: 0,
            testing_left: 0,
            testing_card: 0,
            labels: false,
        }
    }

    /// Also draw the fraud label (for training data).
    pub fn with_labels(mut self) -> Self {
        self.labels = true;
        self
    }

    /// Event ids start at `first` (several producers can share a topic).
    pub fn with_first_id(mut self, first: u64) -> Self {
        self.next_id = first;
        self
    }

    /// The next transaction.
    pub fn next_event(&mut self) -> Transaction {
        let r = &mut self.rng;
        let id = self.next_id;
        self.next_id += 1;
        self.time_ms += r.random_range(0..20);
        if self.burst_left == 0 && r.random_bool(0.0005) {
            // A compromised merchant: a short run of elevated fraud.
            self.burst_left = r.random_range(100..400);
            self.burst_merchant = r.random_range(1..2000);
        }
        let in_burst = self.burst_left > 0;
        if in_burst {
            self.burst_left -= 1;
        }
        if self.testing_left == 0 && r.random_bool(0.002) {
            // Card testing: a stolen card tried at many merchants in quick succession.
            self.testing_left = r.random_range(4..12);
            self.testing_card = r.random_range(1..50_000);
        }
        let testing = self.testing_left > 0 && r.random_bool(0.5);
        if testing {
            self.testing_left -= 1;
        }
        let card = if testing { self.testing_card } else { self.cards.sample(r) as u64 };
        let merchant = if in_burst && r.random_bool(0.3) {
            self.burst_merchant
        } else if testing {
            r.random_range(1..2000)
        } else {
            self.merchants.sample(r) as u64
        };
        let (category, cat_risk) = CATEGORIES[(merchant % CATEGORIES.len() as u64) as usize];
        let channel = CHANNELS[match r.random_range(0..100) {
            0..=54 => 0,
            55..=94 => 1,
            _ => 2,
        }];
        let card_country = COUNTRIES[(card % 5) as usize];
        let cross_border = r.random_bool(0.12);
        let country = if cross_border {
            COUNTRIES[(card as usize + 1 + r.random_range(0..7)) % COUNTRIES.len()]
        } else {
            card_country
        };
        let card_present = channel != "ecom";
        let card_age_days = if r.random_bool(0.1) { None } else { Some(r.random_range(1..3650)) };
        let distance_km =
            if r.random_bool(0.2) { None } else { Some((r.random::<f64>().powi(3) * 2000.0 * 10.0).round() / 10.0) };
        let merchant_risk = ((merchant * 7919 % 1000) as f64 / 1000.0).powi(2);
        let device = (channel == "ecom" && !r.random_bool(0.15)).then(|| {
            let k = match r.random_range(0..100) {
                0..=59 => 0,
                60..=89 => 1,
                90..=97 => 2,
                _ => 3,
            };
            Device { id: format!("dev-{:06}", (card * 31 + k as u64) % 1_000_000), kind: DEVICE_TYPES[k].to_string() }
        });
        let scale = if testing {
            0.1
        } else if category == "travel" {
            4.0
        } else {
            1.0
        };
        let amount = (self.amount.sample(r) * scale * 100.0).round() / 100.0;

        let label = self.labels.then(|| {
            let mut logit = -7.4 + cat_risk;
            logit += 0.9 * ((amount.ln_1p() - 3.5) / 1.1).max(0.0);
            logit += match channel {
                "ecom" => 0.7,
                "atm" => 0.3,
                _ => 0.0,
            };
            logit += if cross_border { 1.0 } else { 0.0 };
            logit += match card_age_days {
                None => 0.3,
                Some(d) if d < 30 => 1.2,
                _ => 0.0,
            };
            logit += distance_km.map_or(0.2, |d| if d > 500.0 { 0.9 } else { 0.0 });
            logit += 2.5 * merchant_risk;
            logit += match &device {
                None if channel == "ecom" => 0.6,
                Some(d) if d.kind == "emulator" => 1.8,
                _ => 0.0,
            };
            if in_burst && merchant == self.burst_merchant {
                logit += 3.0;
            }
            if testing {
                logit += 4.5;
            }
            let p = 1.0 / (1.0 + (-logit).exp());
            u8::from(r.random_bool(p))
        });

        Transaction {
            event_id: format!("tx-{id:010}"),
            card_id: format!("card-{card:06}"),
            merchant_id: format!("m-{merchant:04}"),
            event_time: self.time_ms,
            amount,
            currency: "EUR".into(),
            merchant_category: category.into(),
            channel: channel.into(),
            country: country.into(),
            card_country: card_country.into(),
            cross_border,
            card_present,
            card_age_days,
            distance_km,
            merchant_risk,
            device,
            label,
        }
    }
}

impl Transaction {
    /// JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("transaction serializes")
    }

    /// Avro value matching `schemas/transaction.avsc`.
    pub fn to_avro_value(&self) -> AvroValue {
        let opt = |v: Option<AvroValue>| match v {
            None => AvroValue::Union(0, Box::new(AvroValue::Null)),
            Some(v) => AvroValue::Union(1, Box::new(v)),
        };
        AvroValue::Record(vec![
            ("event_id".into(), AvroValue::String(self.event_id.clone())),
            ("card_id".into(), AvroValue::String(self.card_id.clone())),
            ("merchant_id".into(), AvroValue::String(self.merchant_id.clone())),
            ("event_time".into(), AvroValue::TimestampMillis(self.event_time)),
            ("amount".into(), AvroValue::Double(self.amount)),
            ("currency".into(), AvroValue::String(self.currency.clone())),
            ("merchant_category".into(), AvroValue::String(self.merchant_category.clone())),
            ("channel".into(), AvroValue::String(self.channel.clone())),
            ("country".into(), AvroValue::String(self.country.clone())),
            ("card_country".into(), AvroValue::String(self.card_country.clone())),
            ("cross_border".into(), AvroValue::Boolean(self.cross_border)),
            ("card_present".into(), AvroValue::Boolean(self.card_present)),
            ("card_age_days".into(), opt(self.card_age_days.map(AvroValue::Int))),
            ("distance_km".into(), opt(self.distance_km.map(AvroValue::Double))),
            ("merchant_risk".into(), AvroValue::Double(self.merchant_risk)),
            (
                "device".into(),
                opt(self.device.as_ref().map(|d| {
                    AvroValue::Record(vec![
                        ("id".into(), AvroValue::String(d.id.clone())),
                        ("type".into(), AvroValue::String(d.kind.clone())),
                    ])
                })),
            ),
        ])
    }
}

/// Confluent wire format: 0x00, big-endian schema id, then the datum.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events_and_a_small_fraud_rate() {
        let mut a = Generator::new(7, 10_000, 0).with_labels();
        let mut b = Generator::new(7, 10_000, 0).with_labels();
        let mut frauds = 0;
        for _ in 0..20_000 {
            let (x, y) = (a.next_event(), b.next_event());
            assert_eq!(x, y);
            frauds += x.label.unwrap() as u32;
        }
        let rate = frauds as f64 / 20_000.0;
        assert!((0.003..0.08).contains(&rate), "fraud rate {rate}");
    }

    #[test]
    fn card_activity_is_heavy_tailed() {
        let mut g = Generator::new(1, 10_000, 0);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..20_000 {
            *counts.entry(g.next_event().card_id).or_insert(0u32) += 1;
        }
        let max = *counts.values().max().unwrap();
        assert!(max > 200, "top card has {max} events");
    }
}
