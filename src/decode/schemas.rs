//! Avro writer schemas: where the decoder finds them by Confluent schema id
//! ([`SchemaSource`], [`LocalSchemas`] from `decode.avro_schemas`), and how an `.avsc` file
//! is read ([`parse_schema_file`], which refuses recursive schemas).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::Schema;

/// Why an `.avsc` file cannot be used; the message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum SchemaFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The file is not a valid Avro schema.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: apache_avro::Error,
    },
    /// A record contains itself (decoding a deep datum would overflow the stack).
    #[error(
        "{}: record '{name}' contains itself; recursive schemas are not supported (a deep datum would overflow the stack)",
        path.display()
    )]
    Recursive {
        /// The file.
        path: PathBuf,
        /// The record's full name.
        name: String,
    },
}

/// One bad entry of `decode.avro_schemas`, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The key is not a schema id.
    #[error("decode.avro_schemas.{id}: not an unsigned integer")]
    BadId {
        /// The key as written.
        id: String,
    },
    /// The file it names cannot be used.
    #[error("decode.avro_schemas.{id}: {file}")]
    File {
        /// The key as written.
        id: String,
        /// What is wrong with the file.
        #[source]
        file: SchemaFileError,
    },
}

/// Every bad entry of `decode.avro_schemas` (shown joined by `; `).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SchemaErrors(pub Vec<SchemaError>);

/// The schema registry could not say whether an id exists (down, slow, refusing verdict's
/// credentials): the event is neither decoded nor dead-lettered until it can.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SchemaUnavailable(pub String);

/// Looks up Avro writer schemas by Confluent schema id. A Schema Registry client
/// ([`super::registry::RegistrySchemas`]: fetch on first sight, cache) implements the same trait.
pub trait SchemaSource: Send + Sync {
    /// The writer schema registered under `id`, if known (unknown while unavailable).
    fn schema(&self, id: u32) -> Option<Arc<Schema>>;

    /// The writer schema under `id`: None when the id is known not to exist, an error
    /// when that cannot be told now (a remote source that is down).
    fn resolve(&self, id: u32) -> Result<Option<Arc<Schema>>, SchemaUnavailable> {
        Ok(self.schema(id))
    }
}

/// Schemas read from `.avsc` files at start-up (`decode.avro_schemas`).
#[derive(Debug, Default)]
pub struct LocalSchemas {
    by_id: HashMap<u32, Arc<Schema>>,
}

impl LocalSchemas {
    /// Parses each configured file; every failure is reported.
    pub fn load(map: &BTreeMap<String, PathBuf>) -> Result<Self, SchemaErrors> {
        let mut by_id = HashMap::new();
        let mut errors = Vec::new();
        for (id, path) in map {
            match (id.parse::<u32>(), parse_schema_file(path)) {
                (Ok(id), Ok(s)) => {
                    by_id.insert(id, Arc::new(s));
                }
                (Err(_), _) => errors.push(SchemaError::BadId { id: id.clone() }),
                (_, Err(file)) => errors.push(SchemaError::File { id: id.clone(), file }),
            }
        }
        if errors.is_empty() {
            Ok(Self { by_id })
        } else {
            Err(SchemaErrors(errors))
        }
    }

    /// Registers a schema (tests, embedded defaults).
    pub fn insert(&mut self, id: u32, schema: Schema) {
        self.by_id.insert(id, Arc::new(schema));
    }
}

impl SchemaSource for LocalSchemas {
    fn schema(&self, id: u32) -> Option<Arc<Schema>> {
        self.by_id.get(&id).cloned()
    }
}

/// The name of a record that refers to itself (directly or through its fields), if any.
fn recursive_record<'a>(schema: &'a Schema, enclosing: &mut Vec<&'a apache_avro::schema::Name>) -> Option<String> {
    match schema {
        Schema::Ref { name } => enclosing.contains(&name).then(|| name.fullname(None)),
        Schema::Record(r) => {
            enclosing.push(&r.name);
            let found = r.fields.iter().find_map(|f| recursive_record(&f.schema, enclosing));
            enclosing.pop();
            found
        }
        Schema::Array(a) => recursive_record(&a.items, enclosing),
        Schema::Map(m) => recursive_record(&m.types, enclosing),
        Schema::Union(u) => u.variants().iter().find_map(|v| recursive_record(v, enclosing)),
        _ => None,
    }
}

/// Parses an `.avsc` file. A recursive schema (a record that contains itself, such as a
/// linked list) is refused: decoding a deep datum of it recurses without bound and would
/// overflow the stack, which aborts the process.
pub fn parse_schema_file(path: &Path) -> Result<Schema, SchemaFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SchemaFileError::Read { path: path.to_path_buf(), source })?;
    let schema =
        Schema::parse_str(&text).map_err(|source| SchemaFileError::Parse { path: path.to_path_buf(), source })?;
    if let Some(name) = recursive_record(&schema, &mut Vec::new()) {
        return Err(SchemaFileError::Recursive { path: path.to_path_buf(), name });
    }
    Ok(schema)
}

/// Parses a schema's JSON text (from a registry), refusing recursive schemas as
/// [`parse_schema_file`] does.
pub fn parse_schema_text(text: &str) -> Result<Schema, String> {
    let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
    match recursive_record(&schema, &mut Vec::new()) {
        Some(name) => Err(format!("record '{name}' contains itself; recursive schemas are not supported")),
        None => Ok(schema),
    }
}
