//! [`RegistrySchemas`]: writer schemas from the local files first, then from the registry
//! on first sight of an id, cached for good (a registry id never changes its schema).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use parking_lot::{Mutex, RwLock};

use super::client::{RegistryClient, RegistryError};
use crate::decode::schemas::{parse_schema_text, SchemaUnavailable};
use crate::decode::{LocalSchemas, SchemaSource};

/// How long an id the registry does not know is taken as unknown before it is asked again
/// (an id may be registered after verdict first saw it; one request per id per interval
/// keeps a stream of unknown ids from hammering the registry).
const UNKNOWN_FOR: Duration = Duration::from_secs(30);

/// Most unknown ids remembered at once.
const UNKNOWN_MAX: usize = 10_000;

/// Local schemas, then the registry (`GET /schemas/ids/{id}`), cached.
pub struct RegistrySchemas {
    client: RegistryClient,
    local: LocalSchemas,
    cache: RwLock<HashMap<u32, Arc<Schema>>>,
    /// Ids the registry said it does not know (404 / 40403), or whose schema verdict cannot
    /// use, with when.
    unknown: Mutex<HashMap<u32, Instant>>,
    /// One fetch at a time: the workers that meet a new id together make one request.
    fetching: Mutex<()>,
}

impl RegistrySchemas {
    /// Over `client`, with `local` consulted first.
    pub fn new(client: RegistryClient, local: LocalSchemas) -> Self {
        Self { client, local, cache: RwLock::default(), unknown: Mutex::default(), fetching: Mutex::new(()) }
    }

    fn known(&self, id: u32) -> Option<Option<Arc<Schema>>> {
        if let Some(s) = self.local.schema(id).or_else(|| self.cache.read().get(&id).cloned()) {
            return Some(Some(s));
        }
        let mut unknown = self.unknown.lock();
        match unknown.get(&id) {
            Some(at) if at.elapsed() < UNKNOWN_FOR => Some(None),
            Some(_) => {
                unknown.remove(&id);
                None
            }
            None => None,
        }
    }

    fn fetch(&self, id: u32) -> Result<Option<Arc<Schema>>, SchemaUnavailable> {
        let reply = match self.client.get(&format!("/schemas/ids/{id}")) {
            Ok(reply) => reply,
            Err(RegistryError::Refused { status: 404, .. }) => return Ok(self.unknown(id, "not in the registry")),
            Err(e) => return Err(SchemaUnavailable(e.to_string())),
        };
        let kind = reply.get("schemaType").and_then(|t| t.as_str()).unwrap_or("AVRO");
        if kind != "AVRO" {
            return Ok(self.unknown(id, &format!("schemaType {kind}, not AVRO")));
        }
        let Some(text) = reply.get("schema").and_then(|s| s.as_str()) else {
            return Ok(self.unknown(id, "reply has no 'schema' string"));
        };
        match parse_schema_text(text) {
            Ok(schema) => {
                let schema = Arc::new(schema);
                self.cache.write().insert(id, schema.clone());
                tracing::info!(schema_id = id, registry = self.client.url(), "writer schema fetched");
                Ok(Some(schema))
            }
            Err(e) => Ok(self.unknown(id, &e)),
        }
    }

    fn unknown(&self, id: u32, why: &str) -> Option<Arc<Schema>> {
        // debug: the dead letter and its metric already say it, once per event.
        tracing::debug!(schema_id = id, registry = self.client.url(), reason = why, "schema id unknown");
        let mut unknown = self.unknown.lock();
        if unknown.len() >= UNKNOWN_MAX {
            // A stream of random ids must not grow this without bound.
            unknown.retain(|_, at| at.elapsed() < UNKNOWN_FOR);
            if unknown.len() >= UNKNOWN_MAX {
                unknown.clear();
            }
        }
        unknown.insert(id, Instant::now());
        None
    }
}

impl SchemaSource for RegistrySchemas {
    fn schema(&self, id: u32) -> Option<Arc<Schema>> {
        self.resolve(id).ok().flatten()
    }

    fn resolve(&self, id: u32) -> Result<Option<Arc<Schema>>, SchemaUnavailable> {
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        let _one = self.fetching.lock();
        // Another worker may have fetched it while this one waited.
        if let Some(known) = self.known(id) {
            return Ok(known);
        }
        self.fetch(id)
    }
}
