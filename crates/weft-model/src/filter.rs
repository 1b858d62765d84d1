//! The `filter` and `sort` query parameters of list endpoints
//! (`GET /edge/management/v1/services?filter=...&sort=...`): parsing them, and evaluating
//! them against entity records (the JSON objects the REST API shows).
//!
//! This module owns the whole query language; the REST layer only hands it the raw
//! parameter text and turns a [`FilterError`] into a 400 answer, and
//! [`crate::entity::list`] uses [`Filter::matches`] and [`Sort::compare`].
//!
//! # Filter grammar
//!
//! A subset of OpenZiti's filter language:
//!
//! ```text
//! expr    := or
//! or      := and ( "or" and )*
//! and     := unary ( "and" unary )*
//! unary   := "not" unary | "(" expr ")" | compare
//! compare := field op value
//! field   := ident ( "." ident )*        ident = [A-Za-z_][A-Za-z0-9_-]*
//! op      := "=" | "!=" | "contains" | "icontains" | "startswith" | "endswith"
//!          | "<" | "<=" | ">" | ">="
//! value   := string | number | true | false | null
//! string  := "double quoted" | 'single quoted'    (escapes: \" \' \\)
//! number  := -?[0-9]+ ( "." [0-9]+ )? ( [eE] [+-]? [0-9]+ )?
//! ```
//!
//! Keywords (`and`, `or`, `not`, `contains`, `icontains`, `startswith`, `endswith`,
//! `true`, `false`, `null`) are case-insensitive and cannot be used as field names.
//! Whitespace between tokens is free; a field path is one token (no spaces around its
//! dots). `and` binds tighter than `or`.
//!
//! # Semantics
//!
//! * A field path walks object keys: `tags.env` is `record["tags"]["env"]`. A path that
//!   does not resolve (a missing key, or a step through a non-object) is *missing*.
//! * `!=` is always exactly the negation of `=`. A missing field `=` only `null`, so
//!   `missing = null` and `missing != "x"` are true, every other comparison is false.
//! * Array fields: `=` and `contains` match when some element equals the value, `!=`
//!   when none does; `icontains`, `startswith` and `endswith` match when some string
//!   element does; ordering operators never match arrays.
//! * Strings: `contains` is a substring test, `icontains` the same ignoring case, `=`
//!   is exact, ordering is lexicographic (so RFC 3339 times like `createdAt` order by
//!   time).
//! * Numbers compare numerically as `f64`; booleans and `null` only with `=`/`!=`; values
//!   of different JSON types are never equal (so `=` is false and `!=` true) and never
//!   ordered.
//!
//! # Limits
//!
//! At most 4096 bytes of text and 32 levels of nesting (parentheses and
//! `not`s around a comparison). Exceeding them is a [`FilterError`]; no input panics or
//! overflows the stack.
//!
//! # Sort grammar
//!
//! `field [direction]` where field is exactly `name`, `createdAt` or `updatedAt` and
//! direction is `asc` (the default) or `desc`, case-insensitive.

use std::cmp::Ordering;

use serde_json::Value;

/// The longest filter or sort text accepted, in bytes. Bounds the parser's work on
/// input an API client controls.
const MAX_LEN: usize = 4096;

/// The deepest nesting of parentheses and `not`s accepted. Parsing and evaluation recurse
/// once per level, so this bounds their stack use.
const MAX_DEPTH: usize = 32;

/// How many characters of an offending token an error message quotes.
const QUOTE_CHARS: usize = 32;

/// The reserved words of the filter language (compared ignoring ASCII case).
const KEYWORDS: [&str; 10] = [
    "and",
    "or",
    "not",
    "contains",
    "icontains",
    "startswith",
    "endswith",
    "true",
    "false",
    "null",
];

/// Why a `filter` or `sort` parameter was rejected. It exists so the REST layer can
/// answer 400 with a message that points at the exact spot a client got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct FilterError {
    /// The 0-based character (not byte) offset in the input where the problem is; for an
    /// input that ends too early, the input's length in characters.
    pub position: usize,
    /// What was wrong, usually as "expected X but found Y".
    pub message: String,
}

impl FilterError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        FilterError {
            position,
            message: message.into(),
        }
    }
}

/// A parsed `filter` query parameter. Parsing once up front lets a list endpoint reject a
/// bad filter before touching storage, and then test every record cheaply.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

/// The filter's syntax tree. `and`/`or` chains are flat lists, so only parentheses and
/// `not` add depth.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// `a or b or ...`
    Any(Vec<Node>),
    /// `a and b and ...`
    All(Vec<Node>),
    /// `not a`
    Not(Box<Node>),
    /// `field op value`
    Compare(Comparison),
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    path: Vec<String>,
    op: Op,
    value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Contains,
    IContains,
    StartsWith,
    EndsWith,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl Filter {
    /// Parses the text of a `filter` query parameter (see the module docs for the
    /// grammar). Errors carry the character position of the first problem.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        check_len(text, "filter")?;
        if text.trim().is_empty() {
            return Err(FilterError::new(0, "empty filter"));
        }
        let mut parser = Parser::new(text)?;
        let root = parser.parse_or(0)?;
        match &parser.current {
            None => Ok(Filter { root }),
            Some(Token {
                tok: Tok::RParen,
                start,
                ..
            }) => Err(FilterError::new(
                *start,
                "unexpected \")\" with no matching \"(\"",
            )),
            Some(_) => Err(parser.expected("\"and\", \"or\" or the end of the filter")),
        }
    }

    /// Whether `record` (an entity's JSON form) satisfies this filter.
    pub fn matches(&self, record: &Value) -> bool {
        eval(&self.root, record)
    }
}

/// Rejects text over [`MAX_LEN`] bytes, pointing at the first character that does not fit.
fn check_len(text: &str, what: &str) -> Result<(), FilterError> {
    if text.len() <= MAX_LEN {
        return Ok(());
    }
    let position = text
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= MAX_LEN)
        .count();
    Err(FilterError::new(
        position,
        format!("{what} is longer than {MAX_LEN} bytes"),
    ))
}

/// `text` in double quotes for an error message, cut to [`QUOTE_CHARS`] characters, with
/// double quotes and control characters escaped so the message stays one readable line.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_CHARS {
            out.push('…');
            break;
        }
        if c == '"' || c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

// ---------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Sym(Op),
    /// An identifier or a dotted field path, split at the dots; keywords are one-part words.
    Word(Vec<String>),
    /// A quoted string, escapes resolved.
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Character offsets of the token's first character and one past its last.
    start: usize,
    end: usize,
}

/// Turns filter text into tokens on demand, so the first error in reading order is the
/// one reported.
struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

impl Lexer {
    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn next_token(&mut self) -> Result<Option<Token>, FilterError> {
        while self.peek_at(0).is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let Some(c) = self.peek_at(0) else {
            return Ok(None);
        };
        let start = self.pos;
        let tok = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            '=' => {
                self.pos += 1;
                Tok::Sym(Op::Eq)
            }
            '!' if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                Tok::Sym(Op::Ne)
            }
            '<' | '>' => {
                let or_equal = self.peek_at(1) == Some('=');
                self.pos += if or_equal { 2 } else { 1 };
                Tok::Sym(match (c, or_equal) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                })
            }
            '"' | '\'' => self.string(c)?,
            '-' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => self.number()?,
            c if c.is_ascii_digit() => self.number()?,
            c if is_ident_start(c) => self.word()?,
            other => {
                return Err(FilterError::new(
                    start,
                    format!("unexpected character {}", quote(&other.to_string())),
                ))
            }
        };
        Ok(Some(Token {
            tok,
            start,
            end: self.pos,
        }))
    }

    /// A string opened by `quote` at the current position.
    fn string(&mut self, quote_char: char) -> Result<Tok, FilterError> {
        let open = self.pos;
        let unterminated = || {
            FilterError::new(
                open,
                format!("unterminated string (no closing {quote_char} matches this one)"),
            )
        };
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek_at(0) {
                None => return Err(unterminated()),
                Some(c) if c == quote_char => {
                    self.pos += 1;
                    return Ok(Tok::Str(out));
                }
                Some('\\') => match self.peek_at(1) {
                    Some(e @ ('"' | '\'' | '\\')) => {
                        out.push(e);
                        self.pos += 2;
                    }
                    Some(e) => {
                        return Err(FilterError::new(
                            self.pos,
                            format!(
                                "invalid escape {} (only \\\", \\' and \\\\ are allowed)",
                                quote(&format!("\\{e}"))
                            ),
                        ))
                    }
                    None => return Err(unterminated()),
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// A number starting at the current position (a digit, or `-` before a digit).
    fn number(&mut self) -> Result<Tok, FilterError> {
        let start = self.pos;
        if self.peek_at(0) == Some('-') {
            self.pos += 1;
        }
        // Take everything that could belong to the number, then check its shape, so
        // `1.2.3` and `3abc` are one bad number rather than a number and a surprise.
        while let Some(c) = self.peek_at(0) {
            let sign_after_exponent = (c == '+' || c == '-')
                && matches!(
                    self.pos.checked_sub(1).and_then(|p| self.chars.get(p)),
                    Some('e' | 'E')
                );
            if (is_ident_char(c) && c != '-') || c == '.' || sign_after_exponent {
                self.pos += 1;
            } else {
                break;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if !is_number(&text) {
            return Err(FilterError::new(
                start,
                format!("invalid number {}", quote(&text)),
            ));
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
            _ => Err(FilterError::new(
                start,
                format!("number {} is out of range", quote(&text)),
            )),
        }
    }

    /// An identifier or dotted field path starting at the current position.
    fn word(&mut self) -> Result<Tok, FilterError> {
        let mut parts = Vec::new();
        loop {
            let start = self.pos;
            while self.peek_at(0).is_some_and(is_ident_char) {
                self.pos += 1;
            }
            parts.push(self.chars[start..self.pos].iter().collect());
            if self.peek_at(0) != Some('.') {
                return Ok(Tok::Word(parts));
            }
            self.pos += 1;
            match self.peek_at(0) {
                Some(c) if is_ident_start(c) => {}
                found => {
                    let found = match found {
                        Some(c) => quote(&c.to_string()),
                        None => "the end of the filter".to_string(),
                    };
                    return Err(FilterError::new(
                        self.pos,
                        format!("expected a field name after \".\" but found {found}"),
                    ));
                }
            }
        }
    }
}

/// Whether `s` has the shape `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if b.first() == Some(&b'-') {
        i += 1;
    }
    if !digits(&mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

// ---------------------------------------------------------------------------------------
// Parsing

/// A recursive-descent parser with one token of lookahead (`current`).
struct Parser {
    lexer: Lexer,
    current: Option<Token>,
}

impl Parser {
    fn new(text: &str) -> Result<Self, FilterError> {
        let mut lexer = Lexer {
            chars: text.chars().collect(),
            pos: 0,
        };
        let current = lexer.next_token()?;
        Ok(Parser { lexer, current })
    }

    /// Moves past the current token.
    fn bump(&mut self) -> Result<(), FilterError> {
        self.current = self.lexer.next_token()?;
        Ok(())
    }

    /// Where the current token starts (the input's length at the end).
    fn here(&self) -> usize {
        self.current
            .as_ref()
            .map_or(self.lexer.chars.len(), |t| t.start)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(&self.current, Some(Token { tok: Tok::Word(parts), .. })
            if parts.len() == 1 && parts[0].eq_ignore_ascii_case(keyword))
    }

    /// The current token, described for an error message.
    fn found(&self) -> String {
        match &self.current {
            None => "the end of the filter".to_string(),
            Some(Token {
                tok: Tok::Str(s), ..
            }) => format!("the string {}", quote(s)),
            Some(t) => {
                let text: String = self.lexer.chars[t.start..t.end].iter().collect();
                quote(&text)
            }
        }
    }

    fn expected(&self, what: &str) -> FilterError {
        FilterError::new(
            self.here(),
            format!("expected {what} but found {}", self.found()),
        )
    }

    /// One level deeper than `depth`, or an error at the current token if that is too deep.
    fn enter(&self, depth: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError::new(
                self.here(),
                format!(
                    "filter is nested too deeply (at most {MAX_DEPTH} levels of \
                     parentheses and \"not\")"
                ),
            ));
        }
        Ok(depth + 1)
    }

    fn parse_or(&mut self, depth: usize) -> Result<Node, FilterError> {
        let first = self.parse_and(depth)?;
        if !self.at_keyword("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword("or") {
            self.bump()?;
            items.push(self.parse_and(depth)?);
        }
        Ok(Node::Any(items))
    }

    fn parse_and(&mut self, depth: usize) -> Result<Node, FilterError> {
        let first = self.parse_unary(depth)?;
        if !self.at_keyword("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword("and") {
            self.bump()?;
            items.push(self.parse_unary(depth)?);
        }
        Ok(Node::All(items))
    }

    fn parse_unary(&mut self, depth: usize) -> Result<Node, FilterError> {
        if self.at_keyword("not") {
            let depth = self.enter(depth)?;
            self.bump()?;
            return Ok(Node::Not(Box::new(self.parse_unary(depth)?)));
        }
        if let Some(Token {
            tok: Tok::LParen,
            start: open,
            ..
        }) = self.current
        {
            let depth = self.enter(depth)?;
            self.bump()?;
            let inner = self.parse_or(depth)?;
            if !matches!(
                self.current,
                Some(Token {
                    tok: Tok::RParen,
                    ..
                })
            ) {
                return Err(self.expected(&format!(
                    "\"and\", \"or\" or \")\" to close the \"(\" at position {open}"
                )));
            }
            self.bump()?;
            return Ok(inner);
        }
        self.parse_comparison()
    }

    fn parse_comparison(&mut self) -> Result<Node, FilterError> {
        let path = match &self.current {
            Some(Token {
                tok: Tok::Word(parts),
                ..
            }) if !(parts.len() == 1 && is_keyword(&parts[0])) => parts.clone(),
            _ => return Err(self.expected("a field name, \"not\" or \"(\"")),
        };
        self.bump()?;

        let op = match &self.current {
            Some(Token {
                tok: Tok::Sym(op), ..
            }) => Some(*op),
            Some(Token {
                tok: Tok::Word(parts),
                ..
            }) if parts.len() == 1 => match parts[0].to_ascii_lowercase().as_str() {
                "contains" => Some(Op::Contains),
                "icontains" => Some(Op::IContains),
                "startswith" => Some(Op::StartsWith),
                "endswith" => Some(Op::EndsWith),
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return Err(self.expected(
                "an operator (=, !=, <, <=, >, >=, contains, icontains, startswith or endswith)",
            ));
        };
        self.bump()?;

        let value = match &self.current {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => Some(Literal::Str(s.clone())),
            Some(Token {
                tok: Tok::Num(n), ..
            }) => Some(Literal::Num(*n)),
            Some(Token {
                tok: Tok::Word(parts),
                ..
            }) if parts.len() == 1 => match parts[0].to_ascii_lowercase().as_str() {
                "true" => Some(Literal::Bool(true)),
                "false" => Some(Literal::Bool(false)),
                "null" => Some(Literal::Null),
                _ => None,
            },
            _ => None,
        };
        let Some(value) = value else {
            return Err(self.expected("a value (a quoted string, a number, true, false or null)"));
        };
        self.bump()?;

        Ok(Node::Compare(Comparison { path, op, value }))
    }
}

// ---------------------------------------------------------------------------------------
// Evaluation

fn eval(node: &Node, record: &Value) -> bool {
    match node {
        Node::Any(items) => items.iter().any(|n| eval(n, record)),
        Node::All(items) => items.iter().all(|n| eval(n, record)),
        Node::Not(inner) => !eval(inner, record),
        Node::Compare(c) => {
            let mut field = Some(record);
            for key in &c.path {
                field = field.and_then(|v| v.as_object()).and_then(|o| o.get(key));
            }
            compare(c.op, field, &c.value)
        }
    }
}

/// `field op value`, where `None` is a missing field.
fn compare(op: Op, field: Option<&Value>, value: &Literal) -> bool {
    match op {
        Op::Eq => match field {
            None => *value == Literal::Null,
            Some(Value::Array(items)) => items.iter().any(|e| equals(e, value)),
            Some(v) => equals(v, value),
        },
        Op::Ne => !compare(Op::Eq, field, value),
        Op::Contains => match field {
            Some(Value::Array(items)) => items.iter().any(|e| equals(e, value)),
            Some(Value::String(s)) => matches!(value, Literal::Str(t) if s.contains(t.as_str())),
            _ => false,
        },
        Op::IContains | Op::StartsWith | Op::EndsWith => {
            let Literal::Str(t) = value else {
                return false;
            };
            let test = |v: &Value| {
                let Value::String(s) = v else {
                    return false;
                };
                match op {
                    Op::IContains => s.to_lowercase().contains(&t.to_lowercase()),
                    Op::StartsWith => s.starts_with(t.as_str()),
                    _ => s.ends_with(t.as_str()),
                }
            };
            match field {
                Some(Value::Array(items)) => items.iter().any(test),
                Some(v) => test(v),
                None => false,
            }
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ordering = match (field, value) {
                (Some(Value::String(s)), Literal::Str(t)) => Some(s.as_str().cmp(t.as_str())),
                (Some(Value::Number(n)), Literal::Num(m)) => {
                    n.as_f64().and_then(|n| n.partial_cmp(m))
                }
                _ => None,
            };
            ordering.is_some_and(|o| match op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
    }
}

/// JSON equality with a literal; different types are never equal.
fn equals(v: &Value, literal: &Literal) -> bool {
    match (v, literal) {
        (Value::String(s), Literal::Str(t)) => s == t,
        (Value::Number(n), Literal::Num(m)) => n.as_f64() == Some(*m),
        (Value::Bool(b), Literal::Bool(c)) => b == c,
        (Value::Null, Literal::Null) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Sorting

/// The fields a list can be sorted by: the ones every entity has and clients page over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// The entity's unique `name` (the default, and the order of the name index).
    Name,
    /// `createdAt`, an RFC 3339 time (compares correctly as a string).
    CreatedAt,
    /// `updatedAt`, an RFC 3339 time.
    UpdatedAt,
}

impl SortField {
    /// The record key this field sorts on (also its spelling in the `sort` parameter).
    fn key(self) -> &'static str {
        match self {
            SortField::Name => "name",
            SortField::CreatedAt => "createdAt",
            SortField::UpdatedAt => "updatedAt",
        }
    }
}

/// A parsed `sort` query parameter: the order of a whole list before it is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// Which field orders the records.
    pub field: SortField,
    /// Largest first instead of smallest first.
    pub descending: bool,
}

impl Default for Sort {
    /// Name ascending: what a list without a `sort` parameter returns.
    fn default() -> Self {
        Sort {
            field: SortField::Name,
            descending: false,
        }
    }
}

impl Sort {
    /// "name", "name asc", "createdAt desc", "updatedAt ASC" (direction case-insensitive, field names exact as written here)
    pub fn parse(text: &str) -> Result<Sort, FilterError> {
        check_len(text, "sort")?;
        let words = words(text);
        let Some(&(position, name)) = words.first() else {
            return Err(FilterError::new(0, "empty sort"));
        };
        let field = match name {
            "name" => SortField::Name,
            "createdAt" => SortField::CreatedAt,
            "updatedAt" => SortField::UpdatedAt,
            other => {
                return Err(FilterError::new(
                    position,
                    format!(
                        "expected a sort field (name, createdAt or updatedAt) but found {}",
                        quote(other)
                    ),
                ))
            }
        };
        let descending = match words.get(1) {
            None => false,
            Some((_, d)) if d.eq_ignore_ascii_case("asc") => false,
            Some((_, d)) if d.eq_ignore_ascii_case("desc") => true,
            Some(&(position, other)) => {
                return Err(FilterError::new(
                    position,
                    format!(
                        "expected a sort direction (asc or desc) but found {}",
                        quote(other)
                    ),
                ))
            }
        };
        if let Some(&(position, extra)) = words.get(2) {
            return Err(FilterError::new(
                position,
                format!("expected the end of the sort but found {}", quote(extra)),
            ));
        }
        Ok(Sort { field, descending })
    }

    /// Orders two records by this sort; ties broken by "id" ascending so paging is stable.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let key = self.field.key();
        let by_field = cmp_values(a.get(key), b.get(key));
        let by_field = if self.descending {
            by_field.reverse()
        } else {
            by_field
        };
        by_field.then_with(|| cmp_values(a.get("id"), b.get("id")))
    }
}

/// A total order over optional JSON values for sorting: missing and null first, then
/// booleans, numbers, strings (byte order, like the name index) and finally arrays and
/// objects (all equal to each other).
fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The whitespace-separated words of `text`, each with its character offset.
fn words(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (ci, (bi, c)) in text.char_indices().enumerate() {
        if c.is_whitespace() {
            if let Some((cs, bs)) = start.take() {
                out.push((cs, &text[bs..bi]));
            }
        } else if start.is_none() {
            start = Some((ci, bi));
        }
    }
    if let Some((cs, bs)) = start {
        out.push((cs, &text[bs..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> Value {
        json!({
            "id": "Ab3",
            "name": "web",
            "roleAttributes": ["prod", "eu", 7],
            "tags": {"env": "prod", "n": 3, "f": 2.5, "on": true, "nothing": null, "Mixed": "HeLLo Wörld"},
            "createdAt": "2026-11-21T10:00:00.000Z",
            "updatedAt": "2026-11-22T10:00:00.000Z",
            "encryptionRequired": true,
            "nullable": null,
            "empty": []
        })
    }

    fn m(filter: &str) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter:?} should parse: {e}"))
            .matches(&web())
    }

    fn err(filter: &str) -> FilterError {
        match Filter::parse(filter) {
            Ok(f) => panic!("{filter:?} should not parse, got {f:?}"),
            Err(e) => e,
        }
    }

    fn assert_all(cases: &[(&str, bool)]) {
        for (filter, expected) in cases {
            assert_eq!(m(filter), *expected, "{filter}");
        }
    }

    #[test]
    fn string_equality_and_inequality() {
        assert_all(&[
            (r#"name = "web""#, true),
            (r#"name = "Web""#, false),
            (r#"name = "we""#, false),
            (r#"name != "web""#, false),
            (r#"name != "api""#, true),
            (r#"tags.env = "prod""#, true),
        ]);
    }

    #[test]
    fn string_substring_operators() {
        assert_all(&[
            (r#"name contains "e""#, true),
            (r#"name contains "web""#, true),
            (r#"name contains "E""#, false),
            (r#"name contains """#, true),
            (r#"name icontains "WE""#, true),
            (r#"tags.Mixed icontains "hello wÖRLD""#, true),
            (r#"tags.Mixed icontains "bye""#, false),
            (r#"name startswith "we""#, true),
            (r#"name startswith "eb""#, false),
            (r#"name endswith "eb""#, true),
            (r#"name endswith "we""#, false),
            // Substring operators want a string on both sides.
            ("name contains 1", false),
            ("tags.n contains 3", false),
            ("tags.n startswith \"3\"", false),
        ]);
    }

    #[test]
    fn string_ordering_is_lexicographic() {
        assert_all(&[
            (r#"name < "x""#, true),
            (r#"name < "web""#, false),
            (r#"name <= "web""#, true),
            (r#"name > "wea""#, true),
            (r#"name >= "web""#, true),
            (r#"name > "web""#, false),
            (r#"name < "web0""#, true),
            (r#"name > "WEB""#, true),
            (r#"createdAt > "2026-11-21T09:59:59.999Z""#, true),
            (r#"createdAt < "2026-11-21T10:00:00.001Z""#, true),
            (r#"createdAt >= "2026-11-22T00:00:00.000Z""#, false),
            (r#"updatedAt > "2026-11-21T10:00:00.000Z""#, true),
        ]);
        // The right-hand side is a value, never another field.
        assert!(Filter::parse("updatedAt > createdAt").is_err());
    }

    #[test]
    fn number_comparisons() {
        assert_all(&[
            ("tags.n = 3", true),
            ("tags.n = 3.0", true),
            ("tags.n = 3e0", true),
            ("tags.n = 4", false),
            ("tags.n != 4", true),
            ("tags.n < 4", true),
            ("tags.n < 3", false),
            ("tags.n <= 3", true),
            ("tags.n > -1", true),
            ("tags.n > 2.99", true),
            ("tags.n >= 3", true),
            ("tags.n >= 3.01", false),
            ("tags.f = 2.5", true),
            ("tags.f > 25E-1", false),
            ("tags.f >= 25E-1", true),
            // A number is not a string.
            (r#"tags.n = "3""#, false),
            (r#"tags.n != "3""#, true),
            (r#"tags.n < "4""#, false),
        ]);
    }

    #[test]
    fn bool_and_null_comparisons() {
        assert_all(&[
            ("encryptionRequired = true", true),
            ("encryptionRequired = false", false),
            ("encryptionRequired != false", true),
            ("encryptionRequired != true", false),
            ("tags.on = true", true),
            // Ordering never applies to booleans or null.
            ("encryptionRequired >= true", false),
            ("encryptionRequired < true", false),
            ("nullable = null", true),
            ("nullable != null", false),
            ("nullable = false", false),
            ("nullable != false", true),
            ("nullable <= null", false),
            ("tags.nothing = null", true),
            ("name = null", false),
            ("name != null", true),
            // Types never mix.
            (r#"encryptionRequired = "true""#, false),
            ("encryptionRequired = 1", false),
            ("tags = null", false),
            ("tags != 3", true),
        ]);
    }

    #[test]
    fn array_fields() {
        assert_all(&[
            (r#"roleAttributes contains "prod""#, true),
            (r#"roleAttributes contains "pro""#, false),
            (r#"roleAttributes contains "staging""#, false),
            ("roleAttributes contains 7", true),
            (r#"roleAttributes = "eu""#, true),
            ("roleAttributes = 7", true),
            (r#"roleAttributes = "us""#, false),
            (r#"roleAttributes != "eu""#, false),
            (r#"roleAttributes != "us""#, true),
            (r#"roleAttributes icontains "PRO""#, true),
            (r#"roleAttributes icontains "x""#, false),
            (r#"roleAttributes startswith "e""#, true),
            (r#"roleAttributes startswith "7""#, false),
            (r#"roleAttributes endswith "od""#, true),
            (r#"roleAttributes endswith "x""#, false),
            // Ordering operators never match arrays.
            (r#"roleAttributes < "zzz""#, false),
            (r#"roleAttributes >= "a""#, false),
            ("roleAttributes > 0", false),
            // An empty array equals nothing.
            (r#"empty = "x""#, false),
            (r#"empty != "x""#, true),
            ("empty = null", false),
            (r#"empty contains "x""#, false),
        ]);
    }

    #[test]
    fn missing_fields() {
        assert_all(&[
            (r#"nope = "x""#, false),
            (r#"nope != "x""#, true),
            ("nope = null", true),
            ("nope != null", false),
            (r#"nope contains "x""#, false),
            (r#"nope icontains "x""#, false),
            (r#"nope startswith "x""#, false),
            (r#"nope endswith "x""#, false),
            (r#"nope < "x""#, false),
            ("nope >= 0", false),
            ("nope = false", false),
            // Paths through missing keys or non-objects are missing too.
            (r#"tags.nope = "x""#, false),
            (r#"tags.env.deeper = "x""#, false),
            (r#"tags.env.deeper != "x""#, true),
            ("name.length = null", true),
            (r#"roleAttributes.prod = "x""#, false),
        ]);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // true or (false and false) = true; (true or false) and false would be false.
        assert!(m(r#"name = "web" or name = "x" and name = "y""#));
        // (false and true) or true = true.
        assert!(m(r#"name = "x" and name = "web" or tags.n = 3"#));
        // (false and true) or false = false.
        assert!(!m(r#"name = "x" and name = "web" or tags.n = 4"#));
        assert_eq!(
            Filter::parse("a = 1 or b = 2 and c = 3"),
            Filter::parse("a = 1 or (b = 2 and c = 3)")
        );
        assert_ne!(
            Filter::parse("a = 1 or b = 2 and c = 3"),
            Filter::parse("(a = 1 or b = 2) and c = 3")
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert!(!m(r#"(name = "web" or name = "x") and name = "y""#));
        assert!(m(r#"(name = "web" or name = "x") and (tags.n = 3)"#));
        assert!(m(r#"((((name = "web"))))"#));
        assert!(m(
            r#"name = "x" or (tags.env = "prod" and (tags.n > 1 or nope = 1))"#
        ));
        assert_eq!(Filter::parse("(a = 1)"), Filter::parse("a = 1"));
    }

    #[test]
    fn not_negates() {
        assert!(!m(r#"not name = "web""#));
        assert!(m(r#"not name = "x""#));
        assert!(m(r#"not not name = "web""#));
        assert!(m(r#"not (name = "x" or tags.n = 4)"#));
        // `not` binds tighter than `and`: (not false) and true.
        assert!(m(r#"not name = "x" and tags.n = 3"#));
        assert!(!m(r#"not (name = "x" or tags.n = 3)"#));
        assert!(m(r#"not roleAttributes contains "us""#));
        assert!(m(r#"not(name="x")"#));
    }

    #[test]
    fn quotes_and_escapes() {
        let rec = json!({"a": r#"say "hi""#, "b": "it's", "c": r"back\slash", "d": "é ü 名"});
        let t = |f: &str| Filter::parse(f).unwrap().matches(&rec);
        assert!(t(r#"a = "say \"hi\"""#));
        assert!(t(r#"a = 'say "hi"'"#));
        assert!(t(r#"a = 'say \"hi\"'"#));
        assert!(t(r#"b = "it's""#));
        assert!(t(r#"b = 'it\'s'"#));
        assert!(t(r#"b = "it\'s""#));
        assert!(t(r#"c = "back\\slash""#));
        assert!(t(r#"c = 'back\\slash'"#));
        assert!(t(r#"d = "é ü 名""#));
        assert!(t("d = 'é ü 名'"));
        assert!(!t(r#"a = "say hi""#));
        assert!(m("name = 'web'"));
        assert!(m("name = ''  or  name = \"web\""));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert!(m(r#"NOT name = "x" AND name CONTAINS "w" OR tags.n = 4"#));
        assert!(m(
            r#"name ICONTAINS "WEB" And name StartsWith "w" and name EndsWith "b""#
        ));
        assert!(m(
            "encryptionRequired = TRUE and nope = NULL and tags.on != False"
        ));
        assert!(m(r#"name = "x" Or name = "web""#));
    }

    #[test]
    fn whitespace_is_free() {
        assert!(m(r#"name="web"and(tags.n>=3)"#));
        assert!(m("\t name\n=\r\n'web'   "));
        assert!(m(r#"(name!="x")or(name="y")"#));
        assert!(m("tags.n>-1 and tags.n<4"));
        assert!(m("tags.n\u{3000}=\u{3000}3"));
    }

    #[test]
    fn identifiers_allow_underscores_and_dashes() {
        let rec = json!({"_a": {"b-c": 1}});
        assert!(Filter::parse("_a.b-c = 1").unwrap().matches(&rec));
        assert!(!Filter::parse("_a.b = 1").unwrap().matches(&rec));
    }

    #[test]
    fn error_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            ("   \t", 0, "empty filter"),
            ("name", 4, "expected an operator (=, !=, <"),
            ("name foo 'x'", 5, r#"but found "foo""#),
            ("name = ", 7, "expected a value"),
            (
                "name = web",
                7,
                r#"expected a value (a quoted string, a number, true, false or null) but found "web""#,
            ),
            ("name = 'web", 7, "unterminated string"),
            ("name = \"web", 7, "unterminated string"),
            ("name = 'web\\'", 7, "unterminated string"),
            ("name = 'x\\", 7, "unterminated string"),
            (
                "(name = 'x'",
                11,
                r#"")" to close the "(" at position 0 but found the end of the filter"#,
            ),
            ("(name = 'x' name", 12, r#"but found "name""#),
            ("name = 'x')", 10, r#"unexpected ")""#),
            (
                "name = 'x' and",
                14,
                "expected a field name, \"not\" or \"(\" but found the end of the filter",
            ),
            (
                "name = 'x' foo",
                11,
                r#"expected "and", "or" or the end of the filter but found "foo""#,
            ),
            ("name = 'x' 'y'", 11, r#"but found the string "y""#),
            ("name # 'x'", 5, "unexpected character \"#\""),
            ("name ! 'x'", 5, "unexpected character \"!\""),
            ("naïve = 1", 2, "unexpected character \"ï\""),
            ("é = 1", 0, "unexpected character"),
            ("名前 = 'x'", 0, "unexpected character"),
            // Positions count characters, not bytes: 'é' is two bytes.
            ("name = 'é' foo", 11, r#"but found "foo""#),
            ("name = 'a\\nb'", 9, "invalid escape \"\\n\""),
            (
                "tags. = 1",
                5,
                "expected a field name after \".\" but found \" \"",
            ),
            (
                "tags.",
                5,
                "expected a field name after \".\" but found the end",
            ),
            ("tags.1 = 1", 5, "expected a field name after \".\""),
            ("n = 1.2.3", 4, "invalid number \"1.2.3\""),
            ("n = 3abc", 4, "invalid number"),
            ("n = 3and m = 1", 4, "invalid number \"3and\""),
            ("n = 1.", 4, "invalid number"),
            ("n = 1e", 4, "invalid number"),
            ("n = -", 4, "unexpected character \"-\""),
            ("n = 1e999", 4, "out of range"),
            (
                "()",
                1,
                r#"expected a field name, "not" or "(" but found ")""#,
            ),
            (")", 0, "expected a field name"),
            ("not", 3, "expected a field name"),
            ("and = 1", 0, r#"but found "and""#),
            ("null = 1", 0, "expected a field name"),
            ("name = 'x' or or name = 'y'", 14, r#"but found "or""#),
            (
                "name = = 'x'",
                7,
                r#"expected a value (a quoted string, a number, true, false or null) but found "=""#,
            ),
            ("name contains", 13, "expected a value"),
            ("name 'x'", 5, "expected an operator"),
            ("= 'x'", 0, "expected a field name"),
            ("name = ()", 7, "expected a value"),
            (
                "'x' = name",
                0,
                "expected a field name, \"not\" or \"(\" but found the string \"x\"",
            ),
        ];
        for (input, position, message) in cases {
            let e = err(input);
            assert_eq!(e.position, *position, "{input:?}: {e}");
            assert!(e.message.contains(message), "{input:?}: {e}");
        }
    }

    #[test]
    fn error_display_and_quoting() {
        let e = err("name foo 'x'");
        assert_eq!(
            e.to_string(),
            "expected an operator (=, !=, <, <=, >, >=, contains, icontains, startswith or \
             endswith) but found \"foo\" at position 5"
        );
        assert_eq!(err("").to_string(), "empty filter at position 0");
        // Long tokens are cut in messages.
        let long = format!("name = {}", "x".repeat(200));
        let e = err(&long);
        assert_eq!(e.position, 7);
        assert!(e.message.len() < 150, "{e}");
        assert!(e.message.contains('…'), "{e}");
        // Control characters are escaped.
        let e = err("name \u{1b} 'x'");
        assert!(e.message.contains("\\u{1b}"), "{e}");
    }

    #[test]
    fn length_limit() {
        let at_limit = format!("name = '{}'", "a".repeat(MAX_LEN - 9));
        assert_eq!(at_limit.len(), MAX_LEN);
        assert!(Filter::parse(&at_limit).is_ok());

        let over = format!("name = '{}'", "a".repeat(MAX_LEN - 8));
        let e = err(&over);
        assert_eq!(e.position, MAX_LEN);
        assert!(e.message.contains("longer than 4096 bytes"), "{e}");

        // The position counts characters: 8 ASCII + 2044 two-byte 'é' fill 4096 bytes.
        let multibyte = format!("name = '{}'", "é".repeat(2100));
        let e = err(&multibyte);
        assert_eq!(e.position, 8 + 2044);

        // Huge inputs are rejected by length, not parsed.
        assert_eq!(err(&"(".repeat(100_000)).position, MAX_LEN);
    }

    #[test]
    fn depth_limit() {
        let parens = |n: usize| format!("{}name = 'web'{}", "(".repeat(n), ")".repeat(n));
        assert!(m(&parens(MAX_DEPTH)));
        let e = err(&parens(MAX_DEPTH + 1));
        assert_eq!(e.position, MAX_DEPTH);
        assert!(e.message.contains("nested too deeply"), "{e}");

        let nots = |n: usize| format!("{}name = 'web'", "not ".repeat(n));
        assert!(m(&nots(MAX_DEPTH)));
        assert_eq!(err(&nots(MAX_DEPTH + 1)).position, MAX_DEPTH * 4);

        // Parentheses and nots count together.
        let mixed = |n: usize| format!("{}name = 'web'{}", "not (".repeat(n), ")".repeat(n));
        // An even number of nots.
        assert!(m(&mixed(MAX_DEPTH / 2)));
        assert_eq!(err(&mixed(MAX_DEPTH / 2 + 1)).position, MAX_DEPTH / 2 * 5);

        // Long and/or chains are flat, not deep.
        let chain = vec!["name = 'web'"; 200].join(" and ");
        assert!(m(&chain));
        let chain = vec!["name = 'x'"; 250].join(" or ");
        assert!(!m(&chain));

        // Deep nesting up to the length limit errors quickly instead of overflowing.
        assert_eq!(err(&"(".repeat(MAX_LEN)).position, MAX_DEPTH);
        assert_eq!(err(&"not ".repeat(MAX_LEN / 4)).position, MAX_DEPTH * 4);
    }

    #[test]
    fn malformed_inputs_never_panic() {
        let fixed = [
            "",
            " ",
            "'",
            "\"",
            "''",
            "\"\"",
            "'\\",
            "\\",
            "(",
            ")",
            ")(",
            "((",
            "))",
            "!",
            "!=",
            "=",
            "==",
            "<",
            ">=",
            ".",
            "..",
            "a.",
            ".a",
            "a..b",
            "-",
            "--1",
            "-a",
            "1",
            "1.",
            "1e",
            "1e+",
            "1e-5",
            "a = 1e+",
            "a = -",
            "a = --1",
            "a = .5",
            "a=+1",
            "not",
            "not not",
            "and",
            "or",
            "a = 1 and",
            "a = 1 or",
            "a = 1 not",
            "a",
            "a =",
            "a = 'x",
            "a = \"x",
            "a = 'x\\'",
            "a = \"x\\\"",
            "a = 'x\\q'",
            "a contains",
            "a icontains 1",
            "é",
            "名前",
            "a = '名前",
            "a = 名前",
            "🦀 = 1",
            "a = '🦀'",
            "a\u{0}",
            "\u{0}",
            "\u{feff}a = 1",
            "a = 1 \u{200b}",
            "ａ = 1",
            "a = ０",
            "a = 1)",
            "(a = 1",
            "((a = 1)",
            "(a = 1))",
            "not (",
            "( not",
            "a = (1)",
            "a = [1]",
            "a = {}",
            "a = 'x' and (b = 'y' or",
            "true",
            "null = null",
            "a = TRUE",
            "a = nulll",
            "a.b.c.d.e.f = 1",
            "a = 1 a = 2",
            "a = 'x''y'",
            "a != 'x' != 'y'",
            "a < < 1",
        ];
        let mut inputs: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();

        // Every prefix and suffix of some valid filters.
        let valid = [
            r#"not (name = "w\"eb" or tags.env icontains 'P\'r') AND createdAt >= "2026" or n <= -1.5e3"#,
            "roleAttributes contains 'é名' and x != null and y = TRUE",
        ];
        for v in valid {
            assert!(Filter::parse(v).is_ok(), "{v}");
            let chars: Vec<char> = v.chars().collect();
            for i in 0..=chars.len() {
                inputs.push(chars[..i].iter().collect());
                inputs.push(chars[i..].iter().collect());
            }
        }

        // Deep and long structures.
        for n in [31, 32, 33, 64, 1000, 2000] {
            inputs.push("(".repeat(n));
            inputs.push(")".repeat(n));
            inputs.push("not ".repeat(n));
            inputs.push(format!("{}a = 1{}", "(".repeat(n), ")".repeat(n)));
            inputs.push(format!("{}a = 1", "not (".repeat(n)));
            inputs.push("'".repeat(n));
            inputs.push("\\".repeat(n));
            inputs.push("é".repeat(n));
        }

        // Pseudo-random sequences of fragments (a fixed-seed LCG, so failures reproduce).
        let fragments = [
            "name",
            "tags.env",
            " ",
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "contains",
            "icontains",
            "startswith",
            "endswith",
            "and",
            "or",
            "not",
            "(",
            ")",
            "'x'",
            "\"y\"",
            "'",
            "\"",
            "\\",
            "1",
            "-2.5",
            "1e3",
            "true",
            "false",
            "null",
            "é",
            "名",
            ".",
            "!",
            "#",
            "\t",
            "AND",
            "Or",
            "NOT",
            "-",
            "e",
        ];
        let mut seed: u64 = 0x5eed;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (seed >> 59) as usize;
            let mut s = String::new();
            for _ in 0..len {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                s.push_str(fragments[(seed >> 33) as usize % fragments.len()]);
            }
            inputs.push(s);
        }

        let record = web();
        for input in &inputs {
            let chars = input.chars().count();
            match Filter::parse(input) {
                Ok(f) => {
                    let _ = f.matches(&record);
                    let _ = f.matches(&json!(null));
                    let _ = f.matches(&json!([1, 2]));
                }
                Err(e) => assert!(e.position <= chars, "{input:?}: {e}"),
            }
            if let Err(e) = Sort::parse(input) {
                assert!(e.position <= chars, "{input:?}: {e}");
            }
        }
    }

    #[test]
    fn matches_any_json_without_panicking() {
        let f = Filter::parse("a.b = 1 or a contains 'x' or a > 2 or a icontains 'y'").unwrap();
        for v in [
            json!(null),
            json!(1),
            json!("a"),
            json!([]),
            json!({"a": null}),
            json!({"a": {"b": [1]}}),
            json!({"a": [null, {}, [], 1.5, "X"]}),
            json!({"a": u64::MAX}),
            json!({"a": i64::MIN}),
        ] {
            let _ = f.matches(&v);
        }
        assert!(f.matches(&json!({"a": {"b": [1]}})));
        assert!(f.matches(&json!({"a": u64::MAX})));
    }

    #[test]
    fn sort_parse_accepts() {
        let cases = [
            ("name", SortField::Name, false),
            ("name asc", SortField::Name, false),
            ("name desc", SortField::Name, true),
            ("createdAt desc", SortField::CreatedAt, true),
            ("createdAt DESC", SortField::CreatedAt, true),
            ("updatedAt ASC", SortField::UpdatedAt, false),
            ("updatedAt Desc", SortField::UpdatedAt, true),
            ("  name\t desc  ", SortField::Name, true),
        ];
        for (text, field, descending) in cases {
            assert_eq!(
                Sort::parse(text),
                Ok(Sort { field, descending }),
                "{text:?}"
            );
        }
        assert_eq!(
            Sort::default(),
            Sort {
                field: SortField::Name,
                descending: false
            }
        );
        assert_eq!(Sort::parse("name"), Ok(Sort::default()));
    }

    #[test]
    fn sort_parse_rejects() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty sort"),
            ("   ", 0, "empty sort"),
            (
                "Name",
                0,
                r#"expected a sort field (name, createdAt or updatedAt) but found "Name""#,
            ),
            ("created_at", 0, "expected a sort field"),
            ("  id asc", 2, r#"but found "id""#),
            (
                "name up",
                5,
                r#"expected a sort direction (asc or desc) but found "up""#,
            ),
            ("name ascending", 5, "expected a sort direction"),
            ("é name", 0, r#"but found "é""#),
            (
                "name  desc x",
                11,
                r#"expected the end of the sort but found "x""#,
            ),
            ("name, createdAt", 0, r#"but found "name,""#),
            ("name é", 5, "expected a sort direction"),
            ("createdAt 名 x", 10, "expected a sort direction"),
        ];
        for (input, position, message) in cases {
            let e = Sort::parse(input).expect_err(input);
            assert_eq!(e.position, *position, "{input:?}: {e}");
            assert!(e.message.contains(message), "{input:?}: {e}");
        }
        let long = format!("name{}", " ".repeat(MAX_LEN));
        assert_eq!(Sort::parse(&long).unwrap_err().position, MAX_LEN);
    }

    fn sorted_ids(sort: Sort, records: &[Value]) -> Vec<String> {
        let mut records = records.to_vec();
        records.sort_by(|a, b| sort.compare(a, b));
        records
            .iter()
            .map(|r| r["id"].as_str().unwrap_or("-").to_string())
            .collect()
    }

    #[test]
    fn sort_compare_by_name_with_id_ties() {
        let records = [
            json!({"id": "2", "name": "b"}),
            json!({"id": "9", "name": "a"}),
            json!({"id": "1", "name": "b"}),
            json!({"id": "5", "name": "B"}),
        ];
        assert_eq!(
            sorted_ids(Sort::parse("name").unwrap(), &records),
            ["5", "9", "1", "2"]
        );
        // Descending reverses the field, but ties still go by id ascending.
        assert_eq!(
            sorted_ids(Sort::parse("name desc").unwrap(), &records),
            ["1", "2", "9", "5"]
        );
        let s = Sort::default();
        assert_eq!(s.compare(&records[0], &records[0]), Ordering::Equal);
        assert_eq!(s.compare(&records[2], &records[0]), Ordering::Less);
    }

    #[test]
    fn sort_compare_by_times_and_missing_fields() {
        let records = [
            json!({"id": "c", "createdAt": "2026-11-21T10:00:00.000Z", "updatedAt": "2026-11-21T10:00:00.000Z"}),
            json!({"id": "a", "createdAt": "2026-11-22T10:00:00.000Z", "updatedAt": "2026-11-20T10:00:00.000Z"}),
            json!({"id": "b"}),
            json!({"id": "d", "createdAt": "2025-01-01T00:00:00.000Z", "updatedAt": "2027-01-01T00:00:00.000Z"}),
            json!({"id": "e", "createdAt": "2026-11-21T10:00:00.000Z"}),
        ];
        assert_eq!(
            sorted_ids(Sort::parse("createdAt").unwrap(), &records),
            ["b", "d", "c", "e", "a"]
        );
        assert_eq!(
            sorted_ids(Sort::parse("createdAt desc").unwrap(), &records),
            ["a", "c", "e", "d", "b"]
        );
        assert_eq!(
            sorted_ids(Sort::parse("updatedAt asc").unwrap(), &records),
            ["b", "e", "a", "c", "d"]
        );
        // Records without ids still order totally (missing ids first).
        let s = Sort::parse("name").unwrap();
        assert_eq!(s.compare(&json!({}), &json!({"id": "x"})), Ordering::Less);
        assert_eq!(s.compare(&json!({}), &json!(null)), Ordering::Equal);
    }
}
