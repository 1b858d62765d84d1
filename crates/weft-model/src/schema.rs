//! JSON Schema validation of config data.
//!
//! A config type (like OpenZiti's `config-types`) carries a JSON Schema, and every config of
//! that type must have `data` that validates against it; a config that does not is refused
//! with an error naming the failing field. This module owns that check: [`Schema::compile`]
//! turns a schema document into a [`Schema`] once (when the config type is written), and
//! [`Schema::validate`] checks a value against it (when a config is written), returning the
//! first failure as a [`SchemaError`] whose `path` is a JSON pointer into the value.
//!
//! # Supported keywords
//!
//! A well-defined subset of draft-07 / 2019-09:
//!
//! - `type` (a name or an array of names: `string`, `number`, `integer`, `boolean`, `object`,
//!   `array`, `null`; an integer is any number without a fractional part, so `3.0` is one);
//! - `properties`, `required`, `additionalProperties` (a boolean or a schema);
//! - `items` (a single schema), `minItems`, `maxItems`, `uniqueItems`;
//! - `enum`, `const` (numbers compare by value, so `1` equals `1.0`);
//! - `minLength`, `maxLength` (counted in Unicode scalar values), `pattern` (compiled once,
//!   with `regex-lite` syntax, and searched unanchored as JSON Schema says: anchor it with
//!   `^…$` to match the whole string);
//! - `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (the draft-6+ numeric form);
//! - `anyOf`, `allOf`, `oneOf`, `not`;
//! - `$ref` to local definitions only: `#` (the root), `#/definitions/NAME` and
//!   `#/$defs/NAME`, where NAME is a JSON pointer token (`~0`, `~1`, percent escapes). Keywords
//!   beside a `$ref` apply too (the 2019-09 rule). Recursive schemas are allowed.
//!
//! `format` is accepted and ignored (an annotation, as the specification allows), and so are
//! `$schema`, `$id`, `$comment`, `title`, `description`, `default` and `examples`.
//! `definitions` and `$defs` hold definitions; only the root's are reachable by `$ref`, but
//! nested ones are compiled too, so a mistake in them is still reported. `$id` never changes
//! how a `$ref` resolves.
//!
//! # Why a subset
//!
//! A schema is a promise to whoever writes configs of that type: data that passes is
//! well-formed. A keyword the validator silently skipped would break that promise without
//! anyone noticing, so every keyword outside the list above (`patternProperties`,
//! `multipleOf`, `if`/`then`/`else`, tuple `items`, remote `$ref`s, …) is a compile error
//! `unsupported keyword "X"` naming where it is, and so is a keyword whose value has the
//! wrong type (`"minimum": "3"`), an unknown type name, a bad regex or a `$ref` that does not
//! resolve. The subset covers what config types need, and keeps the validator small enough
//! to be obviously deterministic: every node of a cluster gives the same answer.
//!
//! # Limits
//!
//! A schema may nest at most 64 levels deep. Validation counts one level for every subschema
//! it enters (a property, an item, a branch of a combinator, the target of a `$ref`) and
//! stops with `schema recursion too deep` past 64, so a recursive schema can never overflow
//! the stack. Nothing here panics, whatever the schema or the value.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Number, Value};

/// Deepest schema nesting accepted by [`Schema::compile`], and deepest subschema recursion
/// followed by [`Schema::validate`].
const MAX_DEPTH: usize = 64;

/// Upper bound on the compiled size of one `pattern`, in bytes (regex-lite's own measure).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest list of `enum` values spelled out in full in an error message.
const ENUM_SHOWN: usize = 20;

/// A schema could not be compiled, or a value does not match a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    /// JSON pointer: for validate(), into the VALUE ("" for the root, "/listen/port", "/items/2");
    /// for compile(), into the SCHEMA ("/properties/port/minimum").
    pub path: String,
    /// What is wrong, phrased for the user (e.g. `must be at most 65535`, `is required`).
    pub message: String,
}

/// A compiled JSON Schema: every keyword checked, every `pattern` compiled and every `$ref`
/// resolved. Cloning is cheap (the compiled form is shared).
#[derive(Debug, Clone)]
pub struct Schema {
    inner: Arc<Compiled>,
}

impl Schema {
    /// Compiles a schema document. Fails, with `path` pointing into the schema, on an
    /// unsupported keyword, a keyword with a wrongly typed value, an unknown type name, a bad
    /// regex, a `$ref` that is not local or does not resolve, or nesting deeper than 64.
    pub fn compile(schema: &serde_json::Value) -> Result<Schema, SchemaError> {
        let mut compiler = Compiler {
            index: HashMap::new(),
            defs: Vec::new(),
        };
        if let Value::Object(root) = schema {
            for table in [Table::Definitions, Table::Defs] {
                if let Some(Value::Object(entries)) = root.get(table.keyword()) {
                    for name in entries.keys() {
                        compiler
                            .index
                            .insert((table, name.clone()), compiler.defs.len());
                        compiler.defs.push(Node::Bool(true));
                    }
                }
            }
        }
        let root = compiler.node(schema, "", 0)?;
        Ok(Schema {
            inner: Arc::new(Compiled {
                root,
                defs: compiler.defs,
            }),
        })
    }

    /// The first error found (deterministic: object properties in the schema's key order, then
    /// additional properties in the value's key order; array items in order).
    ///
    /// Within one schema object the checks run in this order: `type`, `const`, `enum`, the
    /// string / number / array keywords, then for objects `required` (in its array's order),
    /// `properties` and `additionalProperties`, then `$ref`, `allOf`, `anyOf`, `oneOf` and
    /// `not`. "Key order" is the order in which `serde_json::Map` holds the keys. An `anyOf`
    /// or `oneOf` failure is reported at the value's path, not inside a branch.
    pub fn validate(&self, value: &serde_json::Value) -> Result<(), SchemaError> {
        self.inner
            .check(&self.inner.root, value, &Path::Root, 0)
            .map_err(Fail::into_error)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Compiled {
    root: Node,
    /// The root's `definitions` and `$defs`, indexed by [`Target::Def`].
    defs: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    /// `true` accepts everything, `false` nothing.
    Bool(bool),
    Rules(Box<Rules>),
}

#[derive(Debug, Clone, Default)]
struct Rules {
    /// Empty: any type.
    types: Vec<Type>,
    constant: Option<Literal>,
    choices: Option<Choices>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Pattern>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    exclusive_minimum: Option<Number>,
    exclusive_maximum: Option<Number>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    unique_items: bool,
    items: Option<Node>,
    required: Vec<String>,
    properties: Vec<(String, Node)>,
    additional: Option<Additional>,
    reference: Option<Target>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Node>,
}

#[derive(Debug, Clone)]
enum Additional {
    Forbidden,
    Schema(Node),
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Root,
    Def(usize),
}

/// A `const`: its canonical key (see [`canonical`]) and how to show it.
#[derive(Debug, Clone)]
struct Literal {
    key: String,
    shown: String,
}

/// An `enum`: the canonical keys of its values and how to show them.
#[derive(Debug, Clone)]
struct Choices {
    keys: HashSet<String>,
    shown: String,
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    regex: regex_lite::Regex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl Type {
    const ALL: [Type; 7] = [
        Type::String,
        Type::Number,
        Type::Integer,
        Type::Boolean,
        Type::Object,
        Type::Array,
        Type::Null,
    ];

    fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Integer => "integer",
            Type::Boolean => "boolean",
            Type::Object => "object",
            Type::Array => "array",
            Type::Null => "null",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            Type::String => "a string",
            Type::Number => "a number",
            Type::Integer => "an integer",
            Type::Boolean => "a boolean",
            Type::Object => "an object",
            Type::Array => "an array",
            Type::Null => "null",
        }
    }

    fn parse(name: &str) -> Option<Type> {
        Type::ALL.into_iter().find(|t| t.name() == name)
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (Type::String, Value::String(_))
            | (Type::Number, Value::Number(_))
            | (Type::Boolean, Value::Bool(_))
            | (Type::Object, Value::Object(_))
            | (Type::Array, Value::Array(_))
            | (Type::Null, Value::Null) => true,
            (Type::Integer, Value::Number(n)) => is_integer(n),
            _ => false,
        }
    }
}

/// The kind of a value, as named in "found X".
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

// ---------------------------------------------------------------------------------------------
// Compiling
// ---------------------------------------------------------------------------------------------

/// The two places definitions live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Definitions,
    Defs,
}

impl Table {
    fn keyword(self) -> &'static str {
        match self {
            Table::Definitions => "definitions",
            Table::Defs => "$defs",
        }
    }
}

struct Compiler {
    /// Every root definition, numbered before compiling so `$ref`s (even recursive ones)
    /// resolve to an index.
    index: HashMap<(Table, String), usize>,
    defs: Vec<Node>,
}

fn error(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        message: message.into(),
    }
}

/// Escapes one JSON pointer token: `~` as `~0`, `/` as `~1`.
fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The pointer `path` extended by one token.
fn child(path: &str, token: &str) -> String {
    format!("{path}/{}", escape_token(token))
}

fn wrong_type(path: &str, expected: &str, found: &Value) -> SchemaError {
    error(
        path,
        format!("must be {expected}, found {}", kind_of(found)),
    )
}

impl Compiler {
    // The functions on the recursive path (`node`, `rules`, `keyword` and the subschema
    // helpers) keep their frames small, so 64 levels stay far from any thread's stack limit
    // even in unoptimised builds; everything else is out of line.

    fn node(&mut self, schema: &Value, path: &str, depth: usize) -> Result<Node, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(nesting_too_deep(path));
        }
        match schema {
            Value::Bool(b) => Ok(Node::Bool(*b)),
            Value::Object(map) => self.rules(map, path, depth).map(Node::Rules),
            other => Err(not_a_schema(path, other)),
        }
    }

    fn rules(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<Box<Rules>, SchemaError> {
        let mut rules = Box::<Rules>::default();
        for (keyword, value) in map {
            let at = child(path, keyword);
            self.keyword(&mut rules, keyword, value, &at, depth)?;
        }
        Ok(rules)
    }

    fn keyword(
        &mut self,
        rules: &mut Rules,
        keyword: &str,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let sub = depth + 1;
        match keyword {
            "properties" => rules.properties = self.properties(value, at, sub)?,
            "additionalProperties" => rules.additional = self.additional(value, at, sub)?,
            "items" => rules.items = Some(self.items(value, at, sub)?),
            "allOf" => rules.all_of = self.branches(value, at, sub)?,
            "anyOf" => rules.any_of = self.branches(value, at, sub)?,
            "oneOf" => rules.one_of = self.branches(value, at, sub)?,
            "not" => rules.not = Some(self.node(value, at, sub)?),
            "definitions" => self.definitions(Table::Definitions, value, at, depth)?,
            "$defs" => self.definitions(Table::Defs, value, at, depth)?,
            "$ref" => rules.reference = Some(self.reference(value, at)?),
            _ => leaf_keyword(rules, keyword, value, at)?,
        }
        Ok(())
    }

    fn properties(
        &mut self,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Vec<(String, Node)>, SchemaError> {
        let Value::Object(props) = value else {
            return Err(wrong_type(at, "an object", value));
        };
        let mut out = Vec::with_capacity(props.len());
        for (name, sub) in props {
            let node = self.node(sub, &child(at, name), depth)?;
            out.push((name.clone(), node));
        }
        Ok(out)
    }

    fn additional(
        &mut self,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Option<Additional>, SchemaError> {
        Ok(match value {
            Value::Bool(true) => None,
            Value::Bool(false) => Some(Additional::Forbidden),
            sub => Some(Additional::Schema(self.node(sub, at, depth)?)),
        })
    }

    fn items(&mut self, value: &Value, at: &str, depth: usize) -> Result<Node, SchemaError> {
        if value.is_array() {
            return Err(error(
                at,
                "the tuple form of \"items\" (an array of schemas) is not supported; \
                 use a single schema",
            ));
        }
        self.node(value, at, depth)
    }

    /// The schemas of `allOf`/`anyOf`/`oneOf`: a non-empty array.
    fn branches(
        &mut self,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Vec<Node>, SchemaError> {
        let Value::Array(items) = value else {
            return Err(wrong_type(at, "an array of schemas", value));
        };
        if items.is_empty() {
            return Err(error(at, "must not be empty"));
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, sub) in items.iter().enumerate() {
            out.push(self.node(sub, &child(at, &i.to_string()), depth)?);
        }
        Ok(out)
    }

    /// `definitions`/`$defs` at `depth` (0: the root's, the only reachable ones; nested ones
    /// are compiled to report mistakes in them, then dropped).
    fn definitions(
        &mut self,
        table: Table,
        value: &Value,
        at: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let Value::Object(entries) = value else {
            return Err(wrong_type(at, "an object", value));
        };
        for (name, sub) in entries {
            let node = self.node(sub, &child(at, name), depth + 1)?;
            if depth == 0 {
                if let Some(&i) = self.index.get(&(table, name.clone())) {
                    if let Some(slot) = self.defs.get_mut(i) {
                        *slot = node;
                    }
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn reference(&self, value: &Value, at: &str) -> Result<Target, SchemaError> {
        const SUPPORTED: &str = "\"#\", \"#/definitions/NAME\" or \"#/$defs/NAME\"";
        let Value::String(reference) = value else {
            return Err(wrong_type(at, "a string", value));
        };
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(error(
                at,
                format!("only local references ({SUPPORTED}) are supported, found \"{reference}\""),
            ));
        };
        if fragment.is_empty() {
            return Ok(Target::Root);
        }
        let unsupported = || {
            error(
                at,
                format!("unsupported reference \"{reference}\": only {SUPPORTED} are supported"),
            )
        };
        let decoded = percent_decode(fragment).ok_or_else(unsupported)?;
        let mut tokens = decoded.split('/');
        let (Some(""), Some(table), Some(name), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(unsupported());
        };
        let table = match table {
            "definitions" => Table::Definitions,
            "$defs" => Table::Defs,
            _ => return Err(unsupported()),
        };
        let name = unescape_token(name).ok_or_else(unsupported)?;
        match self.index.get(&(table, name.clone())) {
            Some(&i) => Ok(Target::Def(i)),
            None => Err(error(
                at,
                format!(
                    "reference \"{reference}\" does not resolve: no definition \"{name}\" in \"{}\"",
                    table.keyword()
                ),
            )),
        }
    }
}

#[cold]
#[inline(never)]
fn nesting_too_deep(path: &str) -> SchemaError {
    error(
        path,
        format!("schema nesting too deep (more than {MAX_DEPTH} levels)"),
    )
}

#[cold]
#[inline(never)]
fn not_a_schema(path: &str, found: &Value) -> SchemaError {
    wrong_type(path, "a schema (an object or a boolean)", found)
}

/// A keyword without subschemas: checked and stored, or refused.
#[inline(never)]
fn leaf_keyword(
    rules: &mut Rules,
    keyword: &str,
    value: &Value,
    at: &str,
) -> Result<(), SchemaError> {
    match keyword {
        "type" => rules.types = types(value, at)?,
        "required" => {
            let Value::Array(names) = value else {
                return Err(wrong_type(at, "an array of strings", value));
            };
            for (i, name) in names.iter().enumerate() {
                match name {
                    Value::String(s) => rules.required.push(s.clone()),
                    other => return Err(wrong_type(&child(at, &i.to_string()), "a string", other)),
                }
            }
        }
        "minItems" => rules.min_items = Some(count(value, at)?),
        "maxItems" => rules.max_items = Some(count(value, at)?),
        "uniqueItems" => rules.unique_items = boolean(value, at)?,
        "minLength" => rules.min_length = Some(count(value, at)?),
        "maxLength" => rules.max_length = Some(count(value, at)?),
        "pattern" => rules.pattern = Some(pattern(value, at)?),
        "minimum" => rules.minimum = Some(number(value, at)?),
        "maximum" => rules.maximum = Some(number(value, at)?),
        "exclusiveMinimum" => rules.exclusive_minimum = Some(number(value, at)?),
        "exclusiveMaximum" => rules.exclusive_maximum = Some(number(value, at)?),
        "enum" => {
            let Value::Array(values) = value else {
                return Err(wrong_type(at, "an array", value));
            };
            rules.choices = Some(Choices {
                keys: values.iter().map(canonical).collect(),
                shown: show_enum(values),
            });
        }
        "const" => {
            rules.constant = Some(Literal {
                key: canonical(value),
                shown: value.to_string(),
            });
        }
        "format" | "$schema" | "$id" | "$comment" | "title" | "description" => {
            if !value.is_string() {
                return Err(wrong_type(at, "a string", value));
            }
        }
        "default" | "examples" => {}
        other => return Err(error(at, format!("unsupported keyword \"{other}\""))),
    }
    Ok(())
}

fn types(value: &Value, at: &str) -> Result<Vec<Type>, SchemaError> {
    let one = |v: &Value, at: &str| -> Result<Type, SchemaError> {
        let Value::String(name) = v else {
            return Err(wrong_type(at, "a type name", v));
        };
        Type::parse(name).ok_or_else(|| {
            let known: Vec<String> = Type::ALL
                .iter()
                .map(|t| format!("\"{}\"", t.name()))
                .collect();
            error(
                at,
                format!(
                    "unknown type \"{name}\" (expected one of {})",
                    known.join(", ")
                ),
            )
        })
    };
    match value {
        Value::Array(names) => {
            if names.is_empty() {
                return Err(error(at, "must not be empty"));
            }
            names
                .iter()
                .enumerate()
                .map(|(i, v)| one(v, &child(at, &i.to_string())))
                .collect()
        }
        Value::String(_) => Ok(vec![one(value, at)?]),
        other => Err(wrong_type(
            at,
            "a type name or an array of type names",
            other,
        )),
    }
}

/// A non-negative integer keyword value (`minLength`, `maxItems`, …); `2.0` counts as 2.
fn count(value: &Value, at: &str) -> Result<u64, SchemaError> {
    let Value::Number(n) = value else {
        return Err(wrong_type(at, "a non-negative integer", value));
    };
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => Ok(f as u64),
        _ => Err(error(
            at,
            format!("must be a non-negative integer, found {n}"),
        )),
    }
}

fn boolean(value: &Value, at: &str) -> Result<bool, SchemaError> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(wrong_type(at, "a boolean", other)),
    }
}

fn number(value: &Value, at: &str) -> Result<Number, SchemaError> {
    match value {
        Value::Number(n) => Ok(n.clone()),
        other => Err(wrong_type(at, "a number", other)),
    }
}

fn pattern(value: &Value, at: &str) -> Result<Pattern, SchemaError> {
    let Value::String(source) = value else {
        return Err(wrong_type(at, "a string (a regular expression)", value));
    };
    let regex = regex_lite::RegexBuilder::new(source)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| error(at, format!("invalid pattern \"{source}\": {e}")))?;
    Ok(Pattern {
        source: source.clone(),
        regex,
    })
}

/// An `enum`'s values as shown in "is not one of [...]"; long lists are cut short.
fn show_enum(values: &[Value]) -> String {
    if values.len() <= ENUM_SHOWN {
        return Value::Array(values.to_vec()).to_string();
    }
    let shown: Vec<String> = values
        .iter()
        .take(ENUM_SHOWN)
        .map(Value::to_string)
        .collect();
    format!(
        "[{},… ({} more)]",
        shown.join(","),
        values.len() - ENUM_SHOWN
    )
}

/// Decodes `%XX` escapes of a URI fragment; `None` if one is malformed or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Undoes JSON pointer escaping of one token (`~1` → `/`, `~0` → `~`); `None` for a `~`
/// followed by anything else.
fn unescape_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Validating
// ---------------------------------------------------------------------------------------------

/// Where in the value validation is, built on the stack and only rendered on failure.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut tokens = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Key(parent, key) => {
                    tokens.push(escape_token(key));
                    at = parent;
                }
                Path::Index(parent, i) => {
                    tokens.push(i.to_string());
                    at = parent;
                }
            }
        }
        let mut out = String::new();
        for token in tokens.iter().rev() {
            out.push('/');
            out.push_str(token);
        }
        out
    }

    #[cold]
    #[inline(never)]
    fn invalid(&self, message: impl Into<String>) -> Fail {
        Fail::Invalid(error(self.render(), message))
    }

    #[cold]
    #[inline(never)]
    fn too_deep(&self) -> Fail {
        Fail::TooDeep(error(self.render(), "schema recursion too deep"))
    }
}

/// A failed check. Running out of recursion depth is not a mismatch: it must not make an
/// `anyOf` try the next branch or a `not` succeed, so it is kept apart.
enum Fail {
    Invalid(SchemaError),
    TooDeep(SchemaError),
}

impl Fail {
    fn into_error(self) -> SchemaError {
        match self {
            Fail::Invalid(e) | Fail::TooDeep(e) => e,
        }
    }
}

/// Whether a branch matched: `Ok(true)`/`Ok(false)`, or a recursion failure to pass on.
fn matched(result: Result<(), Fail>) -> Result<bool, Fail> {
    match result {
        Ok(()) => Ok(true),
        Err(Fail::Invalid(_)) => Ok(false),
        Err(too_deep) => Err(too_deep),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn describe_types(types: &[Type]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.with_article()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_owned(),
        None => "anything".to_owned(),
    }
}

impl Compiled {
    // As in the compiler, the recursive path (`check`, `check_items`, `check_properties`,
    // `check_applicators`) keeps small frames; checks that build messages are out of line.

    fn check(&self, node: &Node, value: &Value, at: &Path<'_>, depth: usize) -> Result<(), Fail> {
        if depth > MAX_DEPTH {
            return Err(at.too_deep());
        }
        let rules = match node {
            Node::Bool(true) => return Ok(()),
            Node::Bool(false) => return Err(at.invalid("is not allowed")),
            Node::Rules(rules) => rules,
        };
        check_local(rules, value, at)?;
        let next = depth + 1;
        match value {
            Value::Array(items) => self.check_items(rules, items, at, next)?,
            Value::Object(map) => self.check_properties(rules, map, at, next)?,
            _ => {}
        }
        if rules.reference.is_some()
            || !rules.all_of.is_empty()
            || !rules.any_of.is_empty()
            || !rules.one_of.is_empty()
            || rules.not.is_some()
        {
            self.check_applicators(rules, value, at, next)?;
        }
        Ok(())
    }

    fn check_items(
        &self,
        rules: &Rules,
        items: &[Value],
        at: &Path<'_>,
        next: usize,
    ) -> Result<(), Fail> {
        if let Some(sub) = &rules.items {
            for (i, item) in items.iter().enumerate() {
                self.check(sub, item, &Path::Index(at, i), next)?;
            }
        }
        Ok(())
    }

    fn check_properties(
        &self,
        rules: &Rules,
        map: &Map<String, Value>,
        at: &Path<'_>,
        next: usize,
    ) -> Result<(), Fail> {
        for (name, sub) in &rules.properties {
            if let Some(v) = map.get(name) {
                self.check(sub, v, &Path::Key(at, name), next)?;
            }
        }
        if let Some(additional) = &rules.additional {
            for (key, v) in map {
                if rules.properties.iter().any(|(name, _)| name == key) {
                    continue;
                }
                let here = Path::Key(at, key);
                match additional {
                    Additional::Forbidden => {
                        return Err(here.invalid("is not allowed (no additional properties)"))
                    }
                    Additional::Schema(sub) => self.check(sub, v, &here, next)?,
                }
            }
        }
        Ok(())
    }

    /// `$ref`, `allOf`, `anyOf`, `oneOf` and `not`, in that order.
    fn check_applicators(
        &self,
        rules: &Rules,
        value: &Value,
        at: &Path<'_>,
        next: usize,
    ) -> Result<(), Fail> {
        if let Some(target) = rules.reference {
            let node = match target {
                Target::Root => Some(&self.root),
                Target::Def(i) => self.defs.get(i),
            };
            if let Some(node) = node {
                self.check(node, value, at, next)?;
            }
        }
        for sub in &rules.all_of {
            self.check(sub, value, at, next)?;
        }
        if !rules.any_of.is_empty() {
            let mut any = false;
            for sub in &rules.any_of {
                if matched(self.check(sub, value, at, next))? {
                    any = true;
                    break;
                }
            }
            if !any {
                return Err(at.invalid("must match at least one of the anyOf schemas"));
            }
        }
        if !rules.one_of.is_empty() {
            let mut count = 0usize;
            for sub in &rules.one_of {
                if matched(self.check(sub, value, at, next))? {
                    count += 1;
                }
            }
            if count != 1 {
                return Err(one_of_failed(at, count));
            }
        }
        if let Some(sub) = &rules.not {
            if matched(self.check(sub, value, at, next))? {
                return Err(at.invalid("must not match the \"not\" schema"));
            }
        }
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn one_of_failed(at: &Path<'_>, count: usize) -> Fail {
    at.invalid(format!(
        "must match exactly one of the oneOf schemas (matched {count})"
    ))
}

/// Everything about one value that needs no subschema: `type`, `const`, `enum`, the string,
/// number and array-size keywords, and `required`.
#[inline(never)]
fn check_local(rules: &Rules, value: &Value, at: &Path<'_>) -> Result<(), Fail> {
    if !rules.types.is_empty() && !rules.types.iter().any(|t| t.matches(value)) {
        return Err(at.invalid(format!(
            "must be {}, found {}",
            describe_types(&rules.types),
            kind_of(value)
        )));
    }
    if rules.constant.is_some() || rules.choices.is_some() {
        let key = canonical(value);
        if let Some(constant) = &rules.constant {
            if constant.key != key {
                return Err(at.invalid(format!("must be equal to {}", constant.shown)));
            }
        }
        if let Some(choices) = &rules.choices {
            if !choices.keys.contains(&key) {
                return Err(at.invalid(format!("is not one of {}", choices.shown)));
            }
        }
    }
    match value {
        Value::String(s) => check_string(rules, s, at),
        Value::Number(n) => check_number(rules, n, at),
        Value::Array(items) => check_array_shape(rules, items, at),
        Value::Object(map) => {
            for name in &rules.required {
                if !map.contains_key(name) {
                    return Err(Path::Key(at, name).invalid("is required"));
                }
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

fn check_string(rules: &Rules, s: &str, at: &Path<'_>) -> Result<(), Fail> {
    if rules.min_length.is_some() || rules.max_length.is_some() {
        let len = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
        if let Some(min) = rules.min_length {
            if len < min {
                return Err(at.invalid(format!(
                    "must be at least {} long",
                    plural(min, "character")
                )));
            }
        }
        if let Some(max) = rules.max_length {
            if len > max {
                return Err(
                    at.invalid(format!("must be at most {} long", plural(max, "character")))
                );
            }
        }
    }
    if let Some(p) = &rules.pattern {
        if !p.regex.is_match(s) {
            return Err(at.invalid(format!("must match pattern \"{}\"", p.source)));
        }
    }
    Ok(())
}

/// `minItems`, `maxItems` and `uniqueItems`.
fn check_array_shape(rules: &Rules, items: &[Value], at: &Path<'_>) -> Result<(), Fail> {
    let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
    if let Some(min) = rules.min_items {
        if len < min {
            return Err(at.invalid(format!("must have at least {}", plural(min, "item"))));
        }
    }
    if let Some(max) = rules.max_items {
        if len > max {
            return Err(at.invalid(format!("must have at most {}", plural(max, "item"))));
        }
    }
    if rules.unique_items {
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(first) = seen.insert(canonical(item), i) {
                return Err(at.invalid(format!(
                    "must not contain duplicate items (items {first} and {i} are equal)"
                )));
            }
        }
    }
    Ok(())
}

fn check_number(rules: &Rules, n: &Number, at: &Path<'_>) -> Result<(), Fail> {
    // `None` (not comparable) cannot happen for finite JSON numbers; it counts as a failure.
    let holds = |bound: &Number, ok: fn(Ordering) -> bool| compare(n, bound).is_some_and(ok);
    if let Some(min) = &rules.minimum {
        if !holds(min, Ordering::is_ge) {
            return Err(at.invalid(format!("must be at least {min}")));
        }
    }
    if let Some(max) = &rules.maximum {
        if !holds(max, Ordering::is_le) {
            return Err(at.invalid(format!("must be at most {max}")));
        }
    }
    if let Some(min) = &rules.exclusive_minimum {
        if !holds(min, Ordering::is_gt) {
            return Err(at.invalid(format!("must be greater than {min}")));
        }
    }
    if let Some(max) = &rules.exclusive_maximum {
        if !holds(max, Ordering::is_lt) {
            return Err(at.invalid(format!("must be less than {max}")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Numbers and equality
// ---------------------------------------------------------------------------------------------

fn exact_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Compares two JSON numbers by value, exactly (no rounding of large integers through f64).
fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    match (exact_integer(a), exact_integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => compare_integer_float(x, b.as_f64()?),
        (None, Some(y)) => compare_integer_float(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// Compares an integer (within the i64/u64 range) with a float, exactly.
fn compare_integer_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= 1e38 {
        return Some(Ordering::Less);
    }
    if f <= -1e38 {
        return Some(Ordering::Greater);
    }
    let floor = f.floor();
    // Exact: |floor| < 1e38 < 2^127, and every f64 of that size is an integer already.
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

/// A string equal for two values exactly when JSON Schema calls them equal: numbers by value
/// (`1` and `1.0` alike), objects regardless of key order. Iterative, so any depth is safe.
fn canonical(value: &Value) -> String {
    enum Step<'a> {
        Value(&'a Value),
        Text(&'static str),
        Key(&'a str),
    }
    let mut out = String::new();
    let mut stack = vec![Step::Value(value)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Text(text) => out.push_str(text),
            Step::Key(key) => {
                let _ = write!(out, "{key:?}:");
            }
            Step::Value(Value::Null) => out.push_str("null"),
            Step::Value(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Step::Value(Value::Number(n)) => canonical_number(n, &mut out),
            Step::Value(Value::String(s)) => {
                let _ = write!(out, "{s:?}");
            }
            Step::Value(Value::Array(items)) => {
                stack.push(Step::Text("]"));
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Step::Value(item));
                    if i > 0 {
                        stack.push(Step::Text(","));
                    }
                }
                stack.push(Step::Text("["));
            }
            Step::Value(Value::Object(map)) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                stack.push(Step::Text("}"));
                for (i, (key, v)) in entries.into_iter().enumerate().rev() {
                    stack.push(Step::Value(v));
                    stack.push(Step::Key(key));
                    if i > 0 {
                        stack.push(Step::Text(","));
                    }
                }
                stack.push(Step::Text("{"));
            }
        }
    }
    out
}

fn canonical_number(n: &Number, out: &mut String) {
    if let Some(i) = exact_integer(n) {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < 1e38 {
            // An integral float equals the integer of the same value.
            let _ = write!(out, "{}", f as i128);
        } else {
            // Never clashes with the integer form: it always has an exponent.
            let _ = write!(out, "{f:e}");
        }
    } else {
        let _ = write!(out, "{n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(schema: Value) -> Schema {
        match Schema::compile(&schema) {
            Ok(s) => s,
            Err(e) => panic!("schema {schema} should compile, got {e}"),
        }
    }

    fn accepts(schema: &Schema, value: Value) {
        if let Err(e) = schema.validate(&value) {
            panic!("{value} should be valid, got {e}");
        }
    }

    fn rejects(schema: &Schema, value: Value) -> SchemaError {
        match schema.validate(&value) {
            Ok(()) => panic!("{value} should be invalid"),
            Err(e) => e,
        }
    }

    fn compile_error(schema: Value) -> SchemaError {
        match Schema::compile(&schema) {
            Ok(_) => panic!("schema {schema} should not compile"),
            Err(e) => e,
        }
    }

    fn err(path: &str, message: &str) -> SchemaError {
        error(path, message)
    }

    #[test]
    fn type_keyword_checks_each_type_name() {
        let cases = [
            ("string", json!("x"), json!(1)),
            ("number", json!(1.5), json!("1.5")),
            ("integer", json!(-7), json!(7.25)),
            ("boolean", json!(false), json!(0)),
            ("object", json!({}), json!([])),
            ("array", json!([]), json!({})),
            ("null", json!(null), json!(false)),
        ];
        for (name, good, bad) in cases {
            let s = compile(json!({ "type": name }));
            accepts(&s, good);
            rejects(&s, bad);
        }
        let s = compile(json!({"type": "integer"}));
        assert_eq!(
            rejects(&s, json!("3")),
            err("", "must be an integer, found string")
        );
    }

    #[test]
    fn type_array_accepts_any_listed_type() {
        let s = compile(json!({"type": ["string", "null"]}));
        accepts(&s, json!("x"));
        accepts(&s, json!(null));
        assert_eq!(
            rejects(&s, json!(3)),
            err("", "must be a string or null, found number")
        );
        let s = compile(json!({"type": ["string", "integer", "boolean"]}));
        assert_eq!(
            rejects(&s, json!([])),
            err("", "must be a string, an integer or a boolean, found array")
        );
    }

    #[test]
    fn integer_is_a_number_without_fraction() {
        let s = compile(json!({"type": "integer"}));
        accepts(&s, json!(3));
        accepts(&s, json!(3.0));
        accepts(&s, json!(-0.0));
        accepts(&s, json!(u64::MAX));
        accepts(&s, json!(i64::MIN));
        accepts(&s, json!(1e300));
        assert_eq!(
            rejects(&s, json!(3.5)),
            err("", "must be an integer, found number")
        );
        let n = compile(json!({"type": "number"}));
        accepts(&n, json!(3));
        accepts(&n, json!(3.5));
    }

    #[test]
    fn properties_and_required() {
        let s = compile(json!({
            "type": "object",
            "required": ["port"],
            "properties": {"port": {"type": "integer"}, "host": {"type": "string"}}
        }));
        accepts(&s, json!({"port": 1}));
        accepts(&s, json!({"port": 1, "host": "h", "extra": [1]}));
        assert_eq!(
            rejects(&s, json!({"host": "h"})),
            err("/port", "is required")
        );
        assert_eq!(
            rejects(&s, json!({"port": 1, "host": 2})),
            err("/host", "must be a string, found number")
        );
        // required applies only to objects
        accepts(&compile(json!({"required": ["a"]})), json!("not an object"));
    }

    #[test]
    fn additional_properties_false_and_schema() {
        let closed = compile(json!({
            "properties": {"a": {}},
            "additionalProperties": false
        }));
        accepts(&closed, json!({"a": 1}));
        assert_eq!(
            rejects(&closed, json!({"a": 1, "b": 2})),
            err("/b", "is not allowed (no additional properties)")
        );
        let typed = compile(json!({
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "integer"}
        }));
        accepts(&typed, json!({"a": "x", "b": 2, "c": 3}));
        assert_eq!(
            rejects(&typed, json!({"a": "x", "b": 2, "c": "3"})),
            err("/c", "must be an integer, found string")
        );
        accepts(
            &compile(json!({"additionalProperties": true})),
            json!({"z": 1}),
        );
    }

    #[test]
    fn errors_follow_schema_then_value_key_order() {
        let s = compile(json!({
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "additionalProperties": false
        }));
        assert_eq!(rejects(&s, json!({"a": 1, "b": 2})).path, "/a");
        assert_eq!(rejects(&s, json!({"b": 2, "y": 1, "x": 1})).path, "/b");
        assert_eq!(rejects(&s, json!({"x": 1, "y": 1})).path, "/x");
        // the same value always gives the same error
        let v = json!({"a": 1, "b": 2, "x": 0});
        assert_eq!(s.validate(&v), s.validate(&v));
    }

    #[test]
    fn items_and_item_counts() {
        let s = compile(json!({
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 1,
            "maxItems": 3
        }));
        accepts(&s, json!([1]));
        accepts(&s, json!([1, 2, 3]));
        assert_eq!(rejects(&s, json!([])), err("", "must have at least 1 item"));
        assert_eq!(
            rejects(&s, json!([1, 2, 3, 4])),
            err("", "must have at most 3 items")
        );
        assert_eq!(
            rejects(&s, json!([1, 2, "x"])),
            err("/2", "must be an integer, found string")
        );
        // array keywords ignore non-arrays
        accepts(&compile(json!({"minItems": 2})), json!("x"));
    }

    #[test]
    fn unique_items_compares_json_values() {
        let s = compile(json!({"uniqueItems": true}));
        accepts(&s, json!([1, 2, "1", [1], {"a": 1}, {"a": 2}, null, true]));
        assert_eq!(
            rejects(&s, json!([1, 2, 1])),
            err(
                "",
                "must not contain duplicate items (items 0 and 2 are equal)"
            )
        );
        // numbers by value, objects regardless of key order
        assert!(s.validate(&json!([1, 1.0])).is_err());
        assert!(s
            .validate(&json!([{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]))
            .is_err());
        accepts(&compile(json!({"uniqueItems": false})), json!([1, 1]));
    }

    #[test]
    fn enum_and_const() {
        let s = compile(json!({"enum": ["tcp", "udp"]}));
        accepts(&s, json!("tcp"));
        assert_eq!(
            rejects(&s, json!("icmp")),
            err("", r#"is not one of ["tcp","udp"]"#)
        );
        let mixed = compile(json!({"enum": [1, null, {"a": [true]}]}));
        accepts(&mixed, json!(1.0));
        accepts(&mixed, json!(null));
        accepts(&mixed, json!({"a": [true]}));
        rejects(&mixed, json!({"a": [false]}));
        rejects(&mixed, json!("1"));

        let c = compile(json!({"const": {"v": 2}}));
        accepts(&c, json!({"v": 2.0}));
        assert_eq!(
            rejects(&c, json!({"v": 3})),
            err("", r#"must be equal to {"v":2}"#)
        );
        let empty = compile(json!({"enum": []}));
        assert_eq!(rejects(&empty, json!(1)), err("", "is not one of []"));
    }

    #[test]
    fn long_enum_lists_are_shortened_in_messages() {
        let values: Vec<i64> = (0..30).collect();
        let s = compile(json!({ "enum": values }));
        let e = rejects(&s, json!(99));
        assert!(e.message.ends_with("… (10 more)]"), "{e}");
    }

    #[test]
    fn string_lengths_count_unicode_scalars() {
        let s = compile(json!({"minLength": 2, "maxLength": 5}));
        accepts(&s, json!("héllo"));
        accepts(&s, json!("🦀🦀"));
        assert_eq!(
            rejects(&s, json!("🦀")),
            err("", "must be at least 2 characters long")
        );
        assert_eq!(
            rejects(&s, json!("héllo!")),
            err("", "must be at most 5 characters long")
        );
        let one = compile(json!({"minLength": 1.0}));
        assert_eq!(
            rejects(&one, json!("")),
            err("", "must be at least 1 character long")
        );
        accepts(&one, json!(42));
    }

    #[test]
    fn pattern_is_an_unanchored_search() {
        let s = compile(json!({"pattern": "[0-9]+"}));
        accepts(&s, json!("abc123def"));
        rejects(&s, json!("abc"));
        let anchored = compile(json!({"pattern": "^[a-z]+$"}));
        accepts(&anchored, json!("abc"));
        assert_eq!(
            rejects(&anchored, json!("abc1")),
            err("", r#"must match pattern "^[a-z]+$""#)
        );
        accepts(&anchored, json!(5));
    }

    #[test]
    fn bad_pattern_is_a_compile_error() {
        let e = compile_error(json!({"properties": {"name": {"pattern": "([a-z"}}}));
        assert_eq!(e.path, "/properties/name/pattern");
        assert!(e.message.starts_with("invalid pattern \"([a-z\""), "{e}");
        // look-around is not regex-lite syntax
        assert_eq!(compile_error(json!({"pattern": "(?=a)"})).path, "/pattern");
    }

    #[test]
    fn numeric_bounds() {
        let s = compile(json!({"minimum": 0, "maximum": 65535}));
        accepts(&s, json!(0));
        accepts(&s, json!(65535));
        accepts(&s, json!(65535.0));
        assert_eq!(rejects(&s, json!(-1)), err("", "must be at least 0"));
        assert_eq!(rejects(&s, json!(65536)), err("", "must be at most 65535"));
        assert_eq!(
            rejects(&s, json!(65535.5)),
            err("", "must be at most 65535")
        );
        assert_eq!(rejects(&s, json!(-0.001)), err("", "must be at least 0"));
        accepts(&s, json!("numeric keywords ignore strings"));

        let x = compile(json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1.5}));
        accepts(&x, json!(1));
        accepts(&x, json!(0.0001));
        assert_eq!(rejects(&x, json!(0)), err("", "must be greater than 0"));
        assert_eq!(rejects(&x, json!(1.5)), err("", "must be less than 1.5"));

        // large integers compare exactly, not through f64 rounding
        let big = compile(json!({"maximum": 9007199254740992_u64}));
        accepts(&big, json!(9007199254740992_u64));
        rejects(&big, json!(9007199254740993_u64));
        let huge = compile(json!({"minimum": u64::MAX}));
        accepts(&huge, json!(u64::MAX));
        accepts(&huge, json!(1e20));
        rejects(&huge, json!(i64::MIN));
        rejects(&huge, json!(1.8e19));
        let float_bound = compile(json!({"maximum": 2.5}));
        accepts(&float_bound, json!(2));
        rejects(&float_bound, json!(3));
        rejects(&float_bound, json!(u64::MAX));
    }

    #[test]
    fn combinators_report_at_the_value() {
        let any =
            compile(json!({"properties": {"v": {"anyOf": [{"type": "string"}, {"minimum": 10}]}}}));
        accepts(&any, json!({"v": "s"}));
        accepts(&any, json!({"v": 11}));
        assert_eq!(
            rejects(&any, json!({"v": 3})),
            err("/v", "must match at least one of the anyOf schemas")
        );

        let one = compile(json!({"oneOf": [{"type": "integer"}, {"minimum": 2}]}));
        accepts(&one, json!(1));
        accepts(&one, json!(2.5));
        assert_eq!(
            rejects(&one, json!(3)),
            err(
                "",
                "must match exactly one of the oneOf schemas (matched 2)"
            )
        );
        assert_eq!(
            rejects(&one, json!(1.5)),
            err(
                "",
                "must match exactly one of the oneOf schemas (matched 0)"
            )
        );

        let all = compile(json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}));
        accepts(&all, json!({"a": 1}));
        assert_eq!(rejects(&all, json!({})), err("/a", "is required"));
        assert_eq!(
            rejects(&all, json!(1)),
            err("", "must be an object, found number")
        );

        let not = compile(json!({"not": {"type": "null"}}));
        accepts(&not, json!(0));
        assert_eq!(
            rejects(&not, json!(null)),
            err("", "must not match the \"not\" schema")
        );
    }

    #[test]
    fn error_paths_in_nested_objects_and_arrays() {
        let s = compile(json!({
            "properties": {
                "listen": {"properties": {"port": {"type": "integer"}}},
                "items": {"items": {"properties": {"tags": {"items": {"type": "string"}}}}}
            }
        }));
        assert_eq!(
            rejects(&s, json!({"listen": {"port": "80"}})).path,
            "/listen/port"
        );
        let e = rejects(
            &s,
            json!({"items": [{"tags": []}, {"tags": ["a"]}, {"tags": ["b", 7]}]}),
        );
        assert_eq!(e, err("/items/2/tags/1", "must be a string, found number"));
        assert_eq!(
            e.to_string(),
            "/items/2/tags/1: must be a string, found number"
        );
        assert_eq!(
            rejects(&compile(json!({"type": "string"})), json!(1)).to_string(),
            ": must be a string, found number"
        );
    }

    #[test]
    fn error_paths_escape_slash_and_tilde() {
        let s = compile(json!({
            "required": ["a/b"],
            "properties": {"m~n": {"type": "string"}, "a/b": {}},
            "additionalProperties": {"type": "integer"}
        }));
        assert_eq!(rejects(&s, json!({})), err("/a~1b", "is required"));
        assert_eq!(rejects(&s, json!({"a/b": 1, "m~n": 1})).path, "/m~0n");
        assert_eq!(rejects(&s, json!({"a/b": 1, "~/x": "s"})).path, "/~0~1x");
        // and in compile errors, into the schema
        let e = compile_error(json!({"properties": {"a/b~": {"minimum": "3"}}}));
        assert_eq!(e.path, "/properties/a~1b~0/minimum");
    }

    #[test]
    fn ref_to_definitions_and_defs() {
        let s = compile(json!({
            "properties": {
                "a": {"$ref": "#/definitions/port"},
                "b": {"$ref": "#/$defs/name"}
            },
            "definitions": {"port": {"type": "integer", "maximum": 65535}},
            "$defs": {"name": {"type": "string", "minLength": 1}}
        }));
        accepts(&s, json!({"a": 80, "b": "x"}));
        assert_eq!(
            rejects(&s, json!({"a": 70000})),
            err("/a", "must be at most 65535")
        );
        assert_eq!(
            rejects(&s, json!({"b": ""})),
            err("/b", "must be at least 1 character long")
        );
        // the two tables are separate namespaces
        let e = compile_error(json!({
            "$ref": "#/definitions/name",
            "$defs": {"name": {}}
        }));
        assert_eq!(e.path, "/$ref");
    }

    #[test]
    fn ref_siblings_apply_too() {
        let s = compile(json!({
            "properties": {"p": {"$ref": "#/definitions/port", "minimum": 1024}},
            "definitions": {"port": {"type": "integer", "maximum": 65535}}
        }));
        accepts(&s, json!({"p": 8080}));
        assert_eq!(
            rejects(&s, json!({"p": 80})),
            err("/p", "must be at least 1024")
        );
        assert_eq!(
            rejects(&s, json!({"p": 70000})),
            err("/p", "must be at most 65535")
        );
    }

    #[test]
    fn ref_names_are_pointer_tokens() {
        let s = compile(json!({
            "properties": {
                "a": {"$ref": "#/definitions/a~1b"},
                "b": {"$ref": "#/definitions/m~0n"},
                "c": {"$ref": "#/definitions/with%20space"}
            },
            "definitions": {
                "a/b": {"type": "string"},
                "m~n": {"type": "integer"},
                "with space": {"type": "null"}
            }
        }));
        accepts(&s, json!({"a": "x", "b": 1, "c": null}));
        assert_eq!(rejects(&s, json!({"a": 1})).path, "/a");
        assert_eq!(rejects(&s, json!({"b": "1"})).path, "/b");
        assert_eq!(rejects(&s, json!({"c": 1})).path, "/c");
    }

    #[test]
    fn recursive_tree_schema() {
        let s = compile(json!({
            "$defs": {
                "node": {
                    "type": "object",
                    "required": ["value"],
                    "properties": {
                        "value": {"type": "integer"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                    },
                    "additionalProperties": false
                }
            },
            "$ref": "#/$defs/node"
        }));
        accepts(&s, json!({"value": 1}));
        accepts(
            &s,
            json!({"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": 4}]}]}),
        );
        assert_eq!(
            rejects(
                &s,
                json!({"value": 1, "children": [{"value": 2}, {"value": 3, "children": [{"value": "4"}]}]})
            ),
            err(
                "/children/1/children/0/value",
                "must be an integer, found string"
            )
        );
        assert_eq!(
            rejects(&s, json!({"value": 1, "children": [{}]})),
            err("/children/0/value", "is required")
        );

        // "#" is the root
        let root = compile(json!({
            "type": "object",
            "properties": {"next": {"$ref": "#"}, "n": {"type": "integer"}}
        }));
        accepts(&root, json!({"n": 1, "next": {"n": 2, "next": {"n": 3}}}));
        assert_eq!(
            rejects(&root, json!({"next": {"next": {"n": "x"}}})).path,
            "/next/next/n"
        );
    }

    #[test]
    fn validation_recursion_is_bounded() {
        // A reference cycle that never consumes the value.
        for schema in [
            json!({"$ref": "#"}),
            json!({"$ref": "#/definitions/a", "definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}}}),
            json!({"anyOf": [{"$ref": "#"}]}),
            json!({"not": {"$ref": "#"}}),
            json!({"oneOf": [{"$ref": "#"}, true]}),
        ] {
            let s = compile(schema.clone());
            let e = rejects(&s, json!(1));
            assert_eq!(e.message, "schema recursion too deep", "{schema}");
        }

        // A recursive schema and a value deeper than the limit.
        let s = compile(json!({"type": "array", "items": {"$ref": "#"}}));
        let mut value = json!([]);
        for _ in 0..20 {
            value = json!([value]);
        }
        accepts(&s, value.clone());
        for _ in 0..100 {
            value = json!([value]);
        }
        assert_eq!(rejects(&s, value).message, "schema recursion too deep");
    }

    #[test]
    fn ref_errors_are_compile_errors() {
        let cases = [
            (json!({"$ref": "other.json#/definitions/a"}), "/$ref"),
            (json!({"$ref": "https://example.com/s.json"}), "/$ref"),
            (
                json!({"properties": {"x": {"$ref": "#/definitions/nope"}}}),
                "/properties/x/$ref",
            ),
            (
                json!({"$ref": "#/properties/a", "properties": {"a": {}}}),
                "/$ref",
            ),
            (
                json!({"$ref": "#/definitions/a/properties/b", "definitions": {"a": {}}}),
                "/$ref",
            ),
            (json!({"$ref": "#/definitions"}), "/$ref"),
            (json!({"$ref": "#anchor"}), "/$ref"),
            (json!({"$ref": "#/definitions/%zz"}), "/$ref"),
            (
                json!({"$ref": "#/definitions/%+1", "definitions": {"\u{1}": {}}}),
                "/$ref",
            ),
            (
                json!({"$ref": "#/definitions/%FF", "definitions": {"\u{ff}": {}}}),
                "/$ref",
            ),
            (
                json!({"$ref": "#/definitions/a~2", "definitions": {"a~2": {}}}),
                "/$ref",
            ),
            (json!({"$ref": 5}), "/$ref"),
            // nested definitions are not reachable from "#/definitions/..."
            (
                json!({"properties": {"a": {"definitions": {"x": {}}, "$ref": "#/definitions/x"}}}),
                "/properties/a/$ref",
            ),
        ];
        for (schema, path) in cases {
            assert_eq!(compile_error(schema.clone()).path, path, "{schema}");
        }
        let e = compile_error(json!({"$ref": "#/definitions/nope"}));
        assert_eq!(
            e.message,
            r##"reference "#/definitions/nope" does not resolve: no definition "nope" in "definitions""##
        );
        let e = compile_error(json!({"$ref": "other.json#/definitions/a"}));
        assert!(e.message.starts_with("only local references"), "{e}");
    }

    #[test]
    fn unsupported_keywords_are_compile_errors() {
        let cases = [
            (
                json!({"patternProperties": {"^a": {}}}),
                "/patternProperties",
            ),
            (json!({"multipleOf": 2}), "/multipleOf"),
            (
                json!({"properties": {"a": {"additionalItems": false}}}),
                "/properties/a/additionalItems",
            ),
            (json!({"items": {"contains": {}}}), "/items/contains"),
            (json!({"if": {}, "then": {}}), "/if"),
            (
                json!({"anyOf": [{}, {"dependencies": {}}]}),
                "/anyOf/1/dependencies",
            ),
            (
                json!({"definitions": {"x": {"propertyNames": {}}}}),
                "/definitions/x/propertyNames",
            ),
            (
                json!({"$defs": {"x": {"unevaluatedProperties": false}}}),
                "/$defs/x/unevaluatedProperties",
            ),
            (json!({"minimun": 1}), "/minimun"),
        ];
        for (schema, path) in cases {
            let e = compile_error(schema.clone());
            assert_eq!(e.path, path, "{schema}");
            let keyword = path.rsplit('/').next().unwrap_or_default();
            assert_eq!(e.message, format!("unsupported keyword \"{keyword}\""));
        }
    }

    #[test]
    fn wrongly_typed_keyword_values_are_compile_errors() {
        let cases = [
            (json!({"properties": {"port": {"minimum": "3"}}}), "/properties/port/minimum", "must be a number, found string"),
            (json!({"required": "a"}), "/required", "must be an array of strings, found string"),
            (json!({"required": ["a", 1]}), "/required/1", "must be a string, found number"),
            (json!({"exclusiveMinimum": true}), "/exclusiveMinimum", "must be a number, found boolean"),
            (json!({"uniqueItems": "yes"}), "/uniqueItems", "must be a boolean, found string"),
            (json!({"minLength": -1}), "/minLength", "must be a non-negative integer, found -1"),
            (json!({"maxItems": 1.5}), "/maxItems", "must be a non-negative integer, found 1.5"),
            (json!({"maxLength": "2"}), "/maxLength", "must be a non-negative integer, found string"),
            (json!({"type": "float"}), "/type", "unknown type \"float\" (expected one of \"string\", \"number\", \"integer\", \"boolean\", \"object\", \"array\", \"null\")"),
            (json!({"type": ["string", "int"]}), "/type/1", "unknown type \"int\" (expected one of \"string\", \"number\", \"integer\", \"boolean\", \"object\", \"array\", \"null\")"),
            (json!({"type": []}), "/type", "must not be empty"),
            (json!({"type": 3}), "/type", "must be a type name or an array of type names, found number"),
            (json!({"properties": []}), "/properties", "must be an object, found array"),
            (json!({"properties": {"a": 1}}), "/properties/a", "must be a schema (an object or a boolean), found number"),
            (json!({"items": [{}]}), "/items", "the tuple form of \"items\" (an array of schemas) is not supported; use a single schema"),
            (json!({"additionalProperties": "no"}), "/additionalProperties", "must be a schema (an object or a boolean), found string"),
            (json!({"enum": "a"}), "/enum", "must be an array, found string"),
            (json!({"anyOf": []}), "/anyOf", "must not be empty"),
            (json!({"oneOf": {}}), "/oneOf", "must be an array of schemas, found object"),
            (json!({"allOf": [{}, null]}), "/allOf/1", "must be a schema (an object or a boolean), found null"),
            (json!({"not": 0}), "/not", "must be a schema (an object or a boolean), found number"),
            (json!({"pattern": 1}), "/pattern", "must be a string (a regular expression), found number"),
            (json!({"format": 1}), "/format", "must be a string, found number"),
            (json!({"title": {}}), "/title", "must be a string, found object"),
            (json!({"definitions": []}), "/definitions", "must be an object, found array"),
            (json!({"$defs": {"a": "b"}}), "/$defs/a", "must be a schema (an object or a boolean), found string"),
            (json!("string"), "", "must be a schema (an object or a boolean), found string"),
            (json!(null), "", "must be a schema (an object or a boolean), found null"),
        ];
        for (schema, path, message) in cases {
            assert_eq!(
                compile_error(schema.clone()),
                err(path, message),
                "{schema}"
            );
        }
    }

    #[test]
    fn schema_nesting_depth_is_limited() {
        let nest = |levels: usize| {
            let mut s = json!({"type": "integer"});
            for _ in 0..levels {
                s = json!({ "items": s });
            }
            s
        };
        let ok = compile(nest(64));
        let mut value = json!(1);
        for _ in 0..64 {
            value = json!([value]);
        }
        accepts(&ok, value);
        let e = compile_error(nest(65));
        assert_eq!(e.path, format!("{}", "/items".repeat(65)));
        assert_eq!(e.message, "schema nesting too deep (more than 64 levels)");
        // deeper than serde_json's own parser allows: still an error, not a crash
        compile_error(nest(500));
    }

    #[test]
    fn boolean_and_empty_schemas() {
        for v in [
            json!(null),
            json!(1),
            json!("s"),
            json!([1]),
            json!({"a": 1}),
        ] {
            accepts(&compile(json!(true)), v.clone());
            accepts(&compile(json!({})), v.clone());
            assert_eq!(
                rejects(&compile(json!(false)), v),
                err("", "is not allowed")
            );
        }
        let s = compile(json!({"properties": {"legacy": false, "any": true}, "items": false}));
        accepts(&s, json!({"any": 1}));
        assert_eq!(
            rejects(&s, json!({"legacy": 1})),
            err("/legacy", "is not allowed")
        );
        accepts(&s, json!([]));
        assert_eq!(rejects(&s, json!([1])), err("/0", "is not allowed"));
    }

    #[test]
    fn annotations_and_format_are_ignored() {
        let s = compile(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "https://weft.example/config/intercept.v1",
            "$comment": "annotations only",
            "title": "t",
            "description": "d",
            "default": {"a": 1},
            "examples": [1, "x"],
            "type": "string",
            "format": "email"
        }));
        accepts(&s, json!("not an email"));
        rejects(&s, json!(1));
        compile(json!({"format": "made-up-format"}));
    }

    fn intercept_v1() -> Schema {
        compile(json!({
            "type": "object",
            "required": ["protocols", "addresses", "portRanges"],
            "properties": {
                "protocols": {"type": "array", "items": {"enum": ["tcp", "udp"]}, "minItems": 1, "uniqueItems": true},
                "addresses": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "portRanges": {"type": "array", "items": {"$ref": "#/definitions/portRange"}},
                "dialOptions": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {"connectTimeoutSeconds": {"type": "integer", "minimum": 0}}
                }
            },
            "definitions": {
                "portRange": {
                    "type": "object",
                    "required": ["low", "high"],
                    "properties": {"low": {"$ref": "#/definitions/port"}, "high": {"$ref": "#/definitions/port"}}
                },
                "port": {"type": "integer", "minimum": 0, "maximum": 65535}
            }
        }))
    }

    #[test]
    fn intercept_v1_accepts_valid_configs() {
        let s = intercept_v1();
        accepts(
            &s,
            json!({
                "protocols": ["tcp", "udp"],
                "addresses": ["echo.weft", "10.0.0.1", "*.example.com"],
                "portRanges": [{"low": 80, "high": 80}, {"low": 1024, "high": 65535}],
                "dialOptions": {"connectTimeoutSeconds": 5}
            }),
        );
        accepts(
            &s,
            json!({"protocols": ["tcp"], "addresses": [], "portRanges": [], "sourceIp": "x"}),
        );
        accepts(
            &s,
            json!({"protocols": ["udp"], "addresses": ["a"], "portRanges": [{"low": 0.0, "high": 53}], "dialOptions": {}}),
        );
    }

    #[test]
    fn intercept_v1_rejects_invalid_configs() {
        let s = intercept_v1();
        let base = json!({
            "protocols": ["tcp"],
            "addresses": ["echo.weft"],
            "portRanges": [{"low": 80, "high": 80}]
        });
        let with = |key: &str, v: Value| {
            let mut c = base.clone();
            c[key] = v;
            c
        };
        let cases = [
            (
                with("portRanges", json!([{"low": 80, "high": 70000}])),
                "/portRanges/0/high",
                "must be at most 65535",
            ),
            (
                with(
                    "portRanges",
                    json!([{"low": 1, "high": 2}, {"low": "1", "high": 2}]),
                ),
                "/portRanges/1/low",
                "must be an integer, found string",
            ),
            (
                with("portRanges", json!([{"low": -1, "high": 2}])),
                "/portRanges/0/low",
                "must be at least 0",
            ),
            (
                with("portRanges", json!([{"low": 1}])),
                "/portRanges/0/high",
                "is required",
            ),
            (
                with("portRanges", json!({"low": 1, "high": 2})),
                "/portRanges",
                "must be an array, found object",
            ),
            (
                with("protocols", json!(["icmp"])),
                "/protocols/0",
                r#"is not one of ["tcp","udp"]"#,
            ),
            (
                with("protocols", json!([])),
                "/protocols",
                "must have at least 1 item",
            ),
            (
                with("protocols", json!(["tcp", "tcp"])),
                "/protocols",
                "must not contain duplicate items (items 0 and 1 are equal)",
            ),
            (
                with("addresses", json!(["ok", ""])),
                "/addresses/1",
                "must be at least 1 character long",
            ),
            (
                with("dialOptions", json!({"connectTimeoutSeconds": 1.5})),
                "/dialOptions/connectTimeoutSeconds",
                "must be an integer, found number",
            ),
            (
                with("dialOptions", json!({"connectTimeoutSeconds": -5})),
                "/dialOptions/connectTimeoutSeconds",
                "must be at least 0",
            ),
            (
                with("dialOptions", json!({"connectTimeout": 5})),
                "/dialOptions/connectTimeout",
                "is not allowed (no additional properties)",
            ),
            (
                json!({"protocols": ["tcp"], "addresses": []}),
                "/portRanges",
                "is required",
            ),
            (json!([]), "", "must be an object, found array"),
        ];
        for (config, path, message) in cases {
            assert_eq!(rejects(&s, config.clone()), err(path, message), "{config}");
        }
    }

    #[test]
    fn odd_inputs_never_panic() {
        let schemas = [
            json!({}),
            json!({"$ref": "#"}),
            json!({"$ref": "#/definitions/", "definitions": {"": {"type": "string"}}}),
            json!({"$ref": "#/definitions/%", "definitions": {"%": {}}}),
            json!({"$ref": "#/definitions/%4", "definitions": {}}),
            json!({"$ref": "#/definitions/%e2%82", "definitions": {}}),
            json!({"$ref": "#/definitions/%C3%A9", "definitions": {"é": {"type": "integer"}}}),
            json!({"$ref": "#%2Fdefinitions%2Fa", "definitions": {"a": {"const": 1}}}),
            json!({"$ref": "#/definitions/~"}),
            json!({"$ref": ""}),
            json!({"minimum": 1e308, "maximum": -1e308}),
            json!({"maxLength": 18446744073709551615_u64, "minItems": 1e19}),
            json!({"minItems": 1.7e19}),
            json!({"pattern": ""}),
            json!({"pattern": "\\"}),
            json!({"pattern": "(((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))))))))))))))))))))))"}),
            json!({"pattern": "a{1000}{1000}{1000}"}),
            json!({"enum": [[[[[]]]], {"": {"": null}}, -0.0, 0, 1e-320]}),
            json!({"const": -0.0}),
            json!({"uniqueItems": true, "items": {"type": ["null", "number", "integer"]}}),
            json!({"properties": {"": {"type": "null"}}, "required": ["", ""]}),
            json!({"type": ["integer", "integer"]}),
            json!({"exclusiveMinimum": -9223372036854775808_i64, "exclusiveMaximum": 18446744073709551615_u64}),
            json!({"allOf": [true, {"anyOf": [false, {"oneOf": [{"not": false}]}]}]}),
        ];
        let mut nested: Value =
            serde_json::from_str(&format!("{}1{}", "[".repeat(120), "]".repeat(120)))
                .expect("serde_json parses 120 levels");
        nested = json!({"deep": nested});
        let values = [
            json!(null),
            json!(true),
            json!(0),
            json!(-0.0),
            json!(1e308),
            json!(-1e308),
            json!(5e-324),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(""),
            json!("\u{0}\u{10ffff}"),
            json!([null, null, 0, -0.0, 0.0]),
            json!({"": null}),
            nested,
        ];
        for schema in &schemas {
            let Ok(compiled) = Schema::compile(schema) else {
                continue;
            };
            for value in &values {
                let _ = compiled.validate(value);
            }
        }
        // specific outcomes among the odd ones
        let s = compile(json!({"$ref": "#/definitions/", "definitions": {"": {"type": "string"}}}));
        rejects(&s, json!(1));
        let s = compile(
            json!({"$ref": "#/definitions/%C3%A9", "definitions": {"é": {"type": "integer"}}}),
        );
        accepts(&s, json!(1));
        rejects(&s, json!("1"));
        let s = compile(json!({"uniqueItems": true}));
        rejects(&s, json!([0, -0.0]));
        accepts(&s, json!([5e-324, 0]));
        assert_eq!(compile_error(json!({"$ref": ""})).path, "/$ref");
        assert_eq!(
            compile_error(json!({"$ref": "#/definitions/%4"})).path,
            "/$ref"
        );
    }

    #[test]
    fn schema_is_cheap_to_share() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schema>();
        let s = intercept_v1();
        let copy = s.clone();
        assert!(Arc::ptr_eq(&s.inner, &copy.inner));
    }
}
