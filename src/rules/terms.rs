//! Named loss terms: what a local rule reports for a block on a minibatch.

use tch::Tensor;

/// Named loss terms, in the rule's order (`prediction` first); written to JSON as an
/// object `{"prediction": …, "divergence": …}` (so earlier runs' files still read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Terms(pub Vec<(String, f64)>);

impl Terms {
    /// The value of term `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The sum of every term.
    pub fn sum(&self) -> f64 {
        self.0.iter().map(|(_, v)| v).sum()
    }

    /// Every term divided by `n` (means from sums).
    pub fn divided(&self, n: f64) -> Terms {
        Terms(self.0.iter().map(|(k, v)| (k.clone(), v / n)).collect())
    }

    /// Adds `other` term by term (a name seen for the first time is appended).
    pub fn add(&mut self, other: &Terms) {
        for (name, value) in &other.0 {
            match self.0.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => *v += value,
                None => self.0.push((name.clone(), *value)),
            }
        }
    }

    /// `name value` pairs in short form (`ce 0.123 db 0.456`).
    pub fn short(&self, digits: usize) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{} {v:.digits$}", short_name(n)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The short name of a loss term in progress lines: `ce`, `db`, `rec`, `sim`.
pub fn short_name(term: &str) -> &str {
    match term {
        "prediction" => "ce",
        "divergence" => "db",
        "reconstruction" => "rec",
        "similarity" => "sim",
        other => other,
    }
}

impl serde::Serialize for Terms {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Terms {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Terms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("named loss terms")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Terms, A::Error> {
                let mut terms = vec![];
                while let Some((k, v)) = map.next_entry::<String, f64>()? {
                    terms.push((k, v));
                }
                Ok(Terms(terms))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The loss terms of one block on one minibatch (or their sums), read back as numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockLoss {
    /// 0-based block index.
    pub block: usize,
    /// The rule's terms (unweighted).
    #[serde(flatten)]
    pub terms: Terms,
}

impl BlockLoss {
    /// Reads the scalar `terms` named `names` of block `block`.
    pub fn read(block: usize, names: &[&str], terms: &[Tensor]) -> Self {
        Self {
            block,
            terms: Terms(
                names
                    .iter()
                    .zip(terms)
                    .map(|(n, t)| (n.to_string(), t.double_value(&[])))
                    .collect(),
            ),
        }
    }

    /// The term `prediction` (the head's cross-entropy; 0 if absent).
    pub fn prediction(&self) -> f64 {
        self.terms.get("prediction").unwrap_or(0.0)
    }

    /// Whether every term is finite.
    pub fn is_finite(&self) -> bool {
        self.terms.0.iter().all(|(_, v)| v.is_finite())
    }
}
