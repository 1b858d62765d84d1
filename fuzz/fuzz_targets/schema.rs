//! Feeds a config type's JSON Schema and a config's `data` to `weft_model::schema`: the
//! input is two JSON texts one after the other (whitespace between them is optional
//! where JSON allows), the schema first. `Schema::compile` sees every schema document;
//! one that compiles validates the second value, and then itself and `null` (schema
//! documents are values too, and recursive ones are the interesting case).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use weft_model::schema::Schema;

fuzz_target!(|data: &[u8]| {
    let mut values = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let Some(Ok(schema_doc)) = values.next() else {
        return;
    };
    let Ok(schema) = Schema::compile(&schema_doc) else {
        return;
    };
    if let Some(Ok(value)) = values.next() {
        let _ = schema.validate(&value);
    }
    let _ = schema.validate(&schema_doc);
    let _ = schema.validate(&Value::Null);
});
