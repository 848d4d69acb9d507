//! A reader for the PHP literal subset that Aegir 3's drush files are written in, as data.
//!
//! Aegir 3 writes its alias files with `var_export` and its per-site `drushrc.php` from a
//! template. Running PHP to read them would execute whatever a compromised or hand-edited file
//! says, so this parses exactly the literal subset those writers produce (strings, numbers,
//! booleans, NULL, nested `array (...)`) and the few harmless statements the templates add, and
//! rejects everything else with the line and column of the first thing it did not expect.

use std::fmt;

/// Larger files are not something Aegir writes; refusing them bounds memory and time.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;
/// `var_export` of Aegir's contexts nests two levels; the limit keeps recursion bounded.
pub const MAX_DEPTH: usize = 32;

/// A PHP value as written in a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// In file order, as PHP keeps it; keys are not deduplicated (the last one wins in `get`).
    Array(Vec<(Key, Value)>),
}

/// An array key: PHP only has integer and string keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => write!(f, "'{s}'"),
        }
    }
}

impl Value {
    /// The string, if this is one (no conversion: a number is not a string here).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean, also in the loose forms hosting passes on the command line and provision then
    /// saves verbatim: ints 0/1 and strings "0"/"1"/"true"/"false".
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "0" | "false" => Some(false),
                "1" | "true" => Some(true),
                _ => None,
            },
            _ => None,
        }
    }

    /// An integer, also from a numeric string (ports are saved as `'3306'` in drushrc.php).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The entry under a string key of an array. PHP turns a canonical integer string key into an
    /// integer key, so `get("0")` also finds `0 => ...`. The last duplicate wins, as in PHP.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Array(entries) = self else {
            return None;
        };
        let as_int = key
            .parse::<i64>()
            .ok()
            .filter(|i| i.to_string() == key)
            .map(Key::Int);
        entries
            .iter()
            .rev()
            .find(|(k, _)| match k {
                Key::Str(s) => s == key,
                k @ Key::Int(_) => Some(k) == as_int.as_ref(),
            })
            .map(|(_, v)| v)
    }

    /// The values of an indexed array (all keys integers, e.g. `aliases`) in file order; `None`
    /// for anything else, including an associative array.
    pub fn list(&self) -> Option<Vec<&Value>> {
        match self {
            Value::Array(entries) if entries.iter().all(|(k, _)| matches!(k, Key::Int(_))) => {
                Some(entries.iter().map(|(_, v)| v).collect())
            }
            _ => None,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
        }
    }
}

/// One `$var['key'] = value;` statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The variable's name without `$`, e.g. `aliases` or `options`.
    pub var: String,
    pub key: String,
    pub value: Value,
}

/// Why a file could not be read as data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhpError {
    #[error("line {line}, column {col}: expected {expected}, found {found}")]
    Unexpected {
        line: usize,
        col: usize,
        expected: String,
        found: String,
    },
    #[error("line {line}, column {col}: arrays nested deeper than {MAX_DEPTH} levels")]
    TooDeep { line: usize, col: usize },
    #[error("file is {size} bytes, more than the {MAX_FILE_SIZE} bytes allowed")]
    TooLarge { size: usize },
}

/// A place in the source, both 1-based; columns count characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    col: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    LBracket,
    RBracket,
    LParen,
    RParen,
    Assign,
    Arrow,
    Comma,
    Semi,
    Minus,
    At,
    CloseTag,
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Var(v) => write!(f, "`${v}`"),
            Tok::Ident(i) => write!(f, "`{i}`"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Int(_) | Tok::Float(_) => f.write_str("a number"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::Arrow => f.write_str("`=>`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Semi => f.write_str("`;`"),
            Tok::Minus => f.write_str("`-`"),
            Tok::At => f.write_str("`@`"),
            Tok::CloseTag => f.write_str("`?>`"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

fn unexpected(pos: Pos, expected: &str, found: impl fmt::Display) -> PhpError {
    PhpError::Unexpected {
        line: pos.line,
        col: pos.col,
        expected: expected.to_owned(),
        found: found.to_string(),
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    i: usize,
    pos: Pos,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src: src.as_bytes(),
            i: 0,
            pos: Pos { line: 1, col: 1 },
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.i).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.src.get(self.i + n).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        if b == b'\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else if b & 0xC0 != 0x80 {
            // UTF-8 continuation bytes do not start a new character.
            self.pos.col += 1;
        }
        Some(b)
    }

    fn found_here(&self) -> String {
        match self.src.get(self.i..).and_then(|rest| {
            std::str::from_utf8(rest)
                .ok()
                .or_else(|| std::str::from_utf8(rest.get(..1)?).ok())
        }) {
            Some(rest) => match rest.chars().next() {
                Some(c) => format!("{c:?}"),
                None => "end of file".to_owned(),
            },
            None => "a non-UTF-8 byte".to_owned(),
        }
    }

    /// The opening tag; Aegir writes `<?php` first thing (an editor may have added a BOM).
    fn open_tag(&mut self) -> Result<(), PhpError> {
        if self.src.starts_with(b"\xEF\xBB\xBF") {
            self.i = 3;
        }
        let tag = b"<?php";
        let rest = self.src.get(self.i..).unwrap_or_default();
        let followed_by_space = rest.get(tag.len()).is_none_or(|b| b.is_ascii_whitespace());
        if rest.len() >= tag.len()
            && rest[..tag.len()].eq_ignore_ascii_case(tag)
            && followed_by_space
        {
            for _ in 0..tag.len() {
                self.bump();
            }
            Ok(())
        } else {
            Err(unexpected(
                self.pos,
                "`<?php` at the start",
                self.found_here(),
            ))
        }
    }

    fn skip_space_and_comments(&mut self) -> Result<(), PhpError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => {
                    self.bump();
                }
                (Some(b'#'), _) | (Some(b'/'), Some(b'/')) => {
                    // A line comment ends at the newline (or at `?>`, as in PHP; the close tag
                    // is then read as a token).
                    while let Some(b) = self.peek() {
                        if b == b'\n' || (b == b'?' && self.peek_at(1) == Some(b'>')) {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.pos;
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                            None => {
                                return Err(unexpected(
                                    start,
                                    "`*/` closing this comment",
                                    "end of file",
                                ))
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next(&mut self) -> Result<(Pos, Tok), PhpError> {
        self.skip_space_and_comments()?;
        let pos = self.pos;
        let Some(b) = self.peek() else {
            return Ok((pos, Tok::Eof));
        };
        let tok = match b {
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            b';' => Tok::Semi,
            b'-' => Tok::Minus,
            b'@' => Tok::At,
            b'=' if self.peek_at(1) == Some(b'>') => {
                self.bump();
                Tok::Arrow
            }
            b'=' => Tok::Assign,
            b'?' if self.peek_at(1) == Some(b'>') => {
                self.bump();
                Tok::CloseTag
            }
            b'$' => {
                self.bump();
                let name = self.ident();
                if name.is_empty() {
                    return Err(unexpected(
                        self.pos,
                        "a variable name after `$`",
                        self.found_here(),
                    ));
                }
                return Ok((pos, Tok::Var(name)));
            }
            b'\'' => return self.single_quoted().map(|s| (pos, Tok::Str(s))),
            b'"' => return self.double_quoted().map(|s| (pos, Tok::Str(s))),
            b'0'..=b'9' | b'.'
                if b != b'.' || self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) =>
            {
                return self.number(pos).map(|t| (pos, t))
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                return Ok((pos, Tok::Ident(self.ident())))
            }
            _ => return Err(unexpected(pos, "a PHP token", self.found_here())),
        };
        self.bump();
        Ok((pos, tok))
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.bump();
        }
        String::from_utf8_lossy(self.src.get(start..self.i).unwrap_or_default()).into_owned()
    }

    fn number(&mut self, pos: Pos) -> Result<Tok, PhpError> {
        let start = self.i;
        let mut float = false;
        while let Some(b) = self.peek() {
            match b {
                b'0'..=b'9' => {}
                b'.' => float = true,
                b'e' | b'E' => {
                    float = true;
                    if matches!(self.peek_at(1), Some(b'+' | b'-')) {
                        self.bump();
                    }
                }
                _ => break,
            }
            self.bump();
        }
        let text = std::str::from_utf8(self.src.get(start..self.i).unwrap_or_default())
            .unwrap_or_default();
        if float {
            text.parse()
                .map(Tok::Float)
                .map_err(|_| unexpected(pos, "a number", format!("`{text}`")))
        } else if text.len() > 1 && text.starts_with('0') {
            // PHP would read this as octal; var_export never writes it, so refuse to guess.
            Err(unexpected(pos, "a decimal integer", format!("`{text}`")))
        } else {
            text.parse().map(Tok::Int).map_err(|_| {
                unexpected(pos, "an integer that fits in 64 bits", format!("`{text}`"))
            })
        }
    }

    fn single_quoted(&mut self) -> Result<String, PhpError> {
        let start = self.pos;
        self.bump();
        let mut out = Vec::new();
        loop {
            match self.bump() {
                None => return Err(unexpected(start, "`'` closing this string", "end of file")),
                Some(b'\'') => break,
                // Only `\\` and `\'` are escapes in single quotes; any other backslash is literal.
                Some(b'\\') if matches!(self.peek(), Some(b'\\' | b'\'')) => {
                    out.extend(self.bump());
                }
                Some(b) => out.push(b),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn double_quoted(&mut self) -> Result<String, PhpError> {
        let start = self.pos;
        self.bump();
        let mut out = Vec::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None => return Err(unexpected(start, "`\"` closing this string", "end of file")),
                Some(b'"') => break,
                Some(b'\\') => {
                    let unescaped = match self.peek() {
                        Some(b'\\') => b'\\',
                        Some(b'"') => b'"',
                        Some(b'$') => b'$',
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'r') => b'\r',
                        // Anything else (octal, hex, unicode escapes) is not produced by the
                        // writers we read; refusing it beats decoding it differently from PHP.
                        _ => {
                            return Err(unexpected(
                                here,
                                "one of the escapes \\\\ \\\" \\$ \\n \\t \\r",
                                self.found_here(),
                            ))
                        }
                    };
                    self.bump();
                    out.push(unescaped);
                }
                // An unescaped `$` would interpolate a variable: that is code, not data.
                Some(b'$') => {
                    return Err(unexpected(
                        here,
                        "a literal string (no `$` interpolation)",
                        "`$`",
                    ))
                }
                Some(b) => out.push(b),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Tok,
    pos: Pos,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, PhpError> {
        let mut lexer = Lexer::new(src);
        lexer.open_tag()?;
        let (pos, tok) = lexer.next()?;
        Ok(Parser { lexer, tok, pos })
    }

    fn advance(&mut self) -> Result<Tok, PhpError> {
        let (pos, tok) = self.lexer.next()?;
        self.pos = pos;
        Ok(std::mem::replace(&mut self.tok, tok))
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), PhpError> {
        if self.tok == want {
            self.advance()?;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn error(&self, expected: &str) -> PhpError {
        unexpected(self.pos, expected, &self.tok)
    }

    fn string(&mut self, what: &str) -> Result<String, PhpError> {
        match &self.tok {
            Tok::Str(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    /// `[ 'key' ]` after a variable.
    fn subscript(&mut self) -> Result<String, PhpError> {
        self.expect(
            Tok::LBracket,
            "`[` (only `$var['key'] = ...;` is understood)",
        )?;
        let key = self.string("a string key")?;
        self.expect(Tok::RBracket, "`]`")?;
        Ok(key)
    }

    fn statements(&mut self) -> Result<Vec<Assignment>, PhpError> {
        let mut out = Vec::new();
        loop {
            match self.tok.clone() {
                Tok::Eof => return Ok(out),
                Tok::CloseTag => {
                    self.advance()?;
                    // Text after `?>` would be output by PHP; Aegir's files have none.
                    return match self.tok {
                        Tok::Eof => Ok(out),
                        _ => Err(self.error("end of file after `?>`")),
                    };
                }
                Tok::Var(var) => {
                    self.advance()?;
                    let key = self.subscript()?;
                    self.expect(Tok::Assign, "`=`")?;
                    if let Tok::Var(from) = &self.tok {
                        // The template copies DB options into $_SERVER for Drupal's settings.php;
                        // that shape, and only that one, is skipped.
                        if var != "_SERVER" || from != "options" {
                            return Err(self.error("a literal value"));
                        }
                        self.advance()?;
                        self.subscript()?;
                    } else {
                        let value = self.value(0)?;
                        out.push(Assignment { var, key, value });
                    }
                    self.expect(Tok::Semi, "`;`")?;
                }
                Tok::At => {
                    // `@include_once('.../local.drushrc.php');`: a local override file that the
                    // importer does not follow (it would be code, not data).
                    self.advance()?;
                    match &self.tok {
                        Tok::Ident(i) if i.eq_ignore_ascii_case("include_once") => {}
                        _ => return Err(self.error("`include_once` after `@`")),
                    }
                    self.advance()?;
                    self.expect(Tok::LParen, "`(`")?;
                    self.string("a string path")?;
                    self.expect(Tok::RParen, "`)`")?;
                    self.expect(Tok::Semi, "`;`")?;
                }
                _ => return Err(self.error("`$name['key'] = value;`")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, PhpError> {
        match self.tok.clone() {
            Tok::Str(s) => {
                self.advance()?;
                Ok(Value::Str(s))
            }
            Tok::Int(i) => {
                self.advance()?;
                Ok(Value::Int(i))
            }
            Tok::Float(f) => {
                self.advance()?;
                Ok(Value::Float(f))
            }
            Tok::Minus => {
                self.advance()?;
                let v = match self.tok {
                    // i64::MIN cannot be written as `-N` since N overflows; var_export writes
                    // it as `-9223372036854775807-1`, which is not supported here.
                    Tok::Int(i) => Value::Int(-i),
                    Tok::Float(f) => Value::Float(-f),
                    _ => return Err(self.error("a number after `-`")),
                };
                self.advance()?;
                Ok(v)
            }
            Tok::Ident(id) => match id.to_ascii_lowercase().as_str() {
                "true" => self.advance().map(|_| Value::Bool(true)),
                "false" => self.advance().map(|_| Value::Bool(false)),
                "null" => self.advance().map(|_| Value::Null),
                "array" => {
                    self.advance()?;
                    self.expect(Tok::LParen, "`(` after `array`")?;
                    self.array(depth, Tok::RParen)
                }
                _ => Err(self.error("a literal value")),
            },
            Tok::LBracket => {
                self.advance()?;
                self.array(depth, Tok::RBracket)
            }
            _ => Err(self.error("a literal value")),
        }
    }

    /// The entries of an array up to and including `close`; the opener is already consumed.
    fn array(&mut self, depth: usize, close: Tok) -> Result<Value, PhpError> {
        if depth >= MAX_DEPTH {
            return Err(PhpError::TooDeep {
                line: self.pos.line,
                col: self.pos.col,
            });
        }
        let mut entries = Vec::new();
        // PHP's next implicit index: one past the largest integer key so far.
        let mut next_index: i64 = 0;
        loop {
            if self.tok == close {
                self.advance()?;
                return Ok(Value::Array(entries));
            }
            let first = self.value(depth + 1)?;
            let (key, value) = if self.tok == Tok::Arrow {
                let key_pos = self.pos;
                self.advance()?;
                let key = match first {
                    Value::Int(i) => Key::Int(i),
                    Value::Str(s) => Key::Str(s),
                    other => {
                        return Err(unexpected(
                            key_pos,
                            "an integer or string key before `=>`",
                            other.kind(),
                        ))
                    }
                };
                (key, self.value(depth + 1)?)
            } else {
                (Key::Int(next_index), first)
            };
            if let Key::Int(i) = key {
                next_index = next_index.max(i.saturating_add(1));
            }
            entries.push((key, value));
            if self.tok == Tok::Comma {
                self.advance()?;
            } else if self.tok != close {
                return Err(self.error(if close == Tok::RParen {
                    "`,` or `)`"
                } else {
                    "`,` or `]`"
                }));
            }
        }
    }
}

/// Reads every `$var['key'] = literal;` statement of a drush PHP file, in order.
///
/// Comments, `$_SERVER['x'] = $options['y'];` and `@include_once('...');` are skipped; anything
/// else is an error, so a file that does more than assign data is never half-read.
pub fn parse_assignments(src: &str) -> Result<Vec<Assignment>, PhpError> {
    if src.len() > MAX_FILE_SIZE {
        return Err(PhpError::TooLarge { size: src.len() });
    }
    Parser::new(src)?.statements()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> String {
        crate::import::test_fixtures()
    }

    fn fixture_files() -> Vec<(String, String)> {
        let mut out = Vec::new();
        for sub in ["drush", "site_drushrc"] {
            let dir = format!("{}{sub}", fixtures());
            let mut paths: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            for p in paths {
                let src = std::fs::read_to_string(&p).unwrap();
                out.push((p.display().to_string(), src));
            }
        }
        assert_eq!(out.len(), 15);
        out
    }

    fn one(src: &str) -> Value {
        let mut a = parse_assignments(src).unwrap();
        assert_eq!(a.len(), 1);
        a.remove(0).value
    }

    #[test]
    fn parses_every_fixture_file() {
        for (path, src) in fixture_files() {
            let a = parse_assignments(&src).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(!a.is_empty(), "{path}");
        }
    }

    #[test]
    fn alias_fixture_values() {
        let src = std::fs::read_to_string(format!(
            "{}drush/server_master.alias.drushrc.php",
            fixtures()
        ))
        .unwrap();
        let a = parse_assignments(&src).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].var, "aliases");
        assert_eq!(a[0].key, "server_master");
        let v = &a[0].value;
        assert_eq!(v.get("http_port"), Some(&Value::Int(80)));
        assert_eq!(
            v.get("provision_db_cloaking").and_then(Value::as_bool),
            Some(true)
        );
        assert_eq!(
            v.get("nginx_has_upload_progress").and_then(Value::as_bool),
            Some(false)
        );
        let ips = v.get("ip_addresses").and_then(Value::list).unwrap();
        assert_eq!(ips, vec![&Value::Str("192.0.2.10".into())]);
    }

    #[test]
    fn drushrc_skips_known_statements_only() {
        let src = std::fs::read_to_string(format!(
            "{}site_drushrc/www.example.com.drushrc.php",
            fixtures()
        ))
        .unwrap();
        let a = parse_assignments(&src).unwrap();
        assert_eq!(a.len(), 9);
        assert!(a.iter().all(|a| a.var == "options"));
        assert_eq!(a[1].key, "db_port");
        assert_eq!(a[1].value.as_i64(), Some(3306));

        for bad in [
            "<?php $_SERVER['x'] = $other['y'];",
            "<?php $options['x'] = $options['y'];",
            "<?php include_once('x');",
            "<?php @require('x');",
            "<?php system('rm -rf /');",
            "<?php $options['x'] = foo();",
            "<?php $options['x'] = 'a' . 'b';",
            "<?php $options['x'] = 1",
        ] {
            assert!(parse_assignments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn double_quoted_strings_and_escapes() {
        let v = one(r#"<?php $a['k'] = "a\\b\"c\nd\te\$f 'g'";"#);
        assert_eq!(v, Value::Str("a\\b\"c\nd\te$f 'g'".into()));
        let v = one(r"<?php $a['k'] = 'it\'s a \\ and \n';");
        assert_eq!(v, Value::Str("it's a \\ and \\n".into()));
        // Interpolation is code.
        assert!(parse_assignments(r#"<?php $a['k'] = "x $y";"#).is_err());
        assert!(parse_assignments(r#"<?php $a['k'] = "\x41";"#).is_err());
    }

    #[test]
    fn numbers_booleans_and_null() {
        let v = one(
            "<?php\n$a['k'] = array ( 'n' => -42, 'f' => -1.5, 'e' => 1.0E+25, 't' => TRUE, \
             'f2' => False, 'z' => NULL, -3 => 'neg', );",
        );
        assert_eq!(v.get("n"), Some(&Value::Int(-42)));
        assert_eq!(v.get("f"), Some(&Value::Float(-1.5)));
        assert_eq!(v.get("e"), Some(&Value::Float(1.0e25)));
        assert_eq!(v.get("t"), Some(&Value::Bool(true)));
        assert_eq!(v.get("f2"), Some(&Value::Bool(false)));
        assert!(v.get("z").is_some_and(Value::is_null));
        assert_eq!(v.get("-3").and_then(Value::as_str), Some("neg"));
        assert!(parse_assignments("<?php $a['k'] = 99999999999999999999;").is_err());
    }

    #[test]
    fn loose_helpers() {
        assert_eq!(Value::Int(1).as_bool(), Some(true));
        assert_eq!(Value::Str("0".into()).as_bool(), Some(false));
        assert_eq!(Value::Str("false".into()).as_bool(), Some(false));
        assert_eq!(Value::Str("TRUE".into()).as_bool(), Some(true));
        assert_eq!(Value::Int(2).as_bool(), None);
        assert_eq!(Value::Str("yes".into()).as_bool(), None);
        assert_eq!(Value::Str("3306".into()).as_i64(), Some(3306));
        assert_eq!(Value::Str("x".into()).as_i64(), None);
        assert_eq!(Value::Str("x".into()).list(), None);
    }

    #[test]
    fn nested_arrays_and_implicit_keys() {
        let v = one(
            "<?php $a['k'] = array (\n  'outer' => \n  array (\n    0 => array ( 'x' => 1 ),\n    \
             5 => 'five',\n    'six',\n  ),\n  'short' => ['a', 'b'],\n);",
        );
        let outer = v.get("outer").unwrap();
        let Value::Array(entries) = outer else {
            panic!()
        };
        assert_eq!(entries[2].0, Key::Int(6));
        assert_eq!(
            outer.get("0").and_then(|i| i.get("x")),
            Some(&Value::Int(1))
        );
        assert_eq!(outer.list().map(|l| l.len()), Some(3));
        assert_eq!(
            v.get("short").and_then(Value::list).map(|l| l.len()),
            Some(2)
        );
        assert_eq!(v.list(), None);
    }

    #[test]
    fn depth_limit() {
        let nest = |n: usize| format!("<?php $a['k'] = {}{};", "array(".repeat(n), ")".repeat(n));
        assert!(parse_assignments(&nest(MAX_DEPTH)).is_ok());
        assert!(matches!(
            parse_assignments(&nest(MAX_DEPTH + 1)),
            Err(PhpError::TooDeep { .. })
        ));
        // Far deeper input must not overflow the stack either.
        assert!(parse_assignments(&nest(100_000)).is_err());
    }

    #[test]
    fn size_limit() {
        let src = format!("<?php $a['k'] = '{}';", "x".repeat(MAX_FILE_SIZE));
        assert!(matches!(
            parse_assignments(&src),
            Err(PhpError::TooLarge { .. })
        ));
    }

    #[test]
    fn errors_say_where_and_what() {
        let err =
            parse_assignments("<?php\n$a['k'] = array (\n  'x' => 1\n  'y' => 2,\n);").unwrap_err();
        assert_eq!(
            err,
            PhpError::Unexpected {
                line: 4,
                col: 3,
                expected: "`,` or `)`".into(),
                found: "a string".into()
            }
        );
        assert!(err.to_string().starts_with("line 4, column 3: expected"));
        assert!(parse_assignments("hello").is_err());
        assert!(parse_assignments("<?phpx").is_err());
        assert!(parse_assignments("<?php $a['k'] = 1; ?>\n").is_ok());
        assert!(parse_assignments("<?php $a['k'] = 1; ?> html").is_err());
        assert!(parse_assignments("<?php /* unterminated").is_err());
    }

    #[test]
    fn never_panics_on_prefixes_or_garbage() {
        for (_, src) in fixture_files() {
            for (i, _) in src.char_indices() {
                let _ = parse_assignments(&src[..i]);
            }
            // Byte-wise mutations at every position, kept valid UTF-8.
            for (i, _) in src.char_indices().step_by(7) {
                for c in ['\'', '"', '\\', '$', '(', ']', '-', 'é', '\0'] {
                    let mut s = src.clone();
                    s.insert(i, c);
                    let _ = parse_assignments(&s);
                }
            }
        }
        for garbage in [
            "",
            "<",
            "<?php",
            "<?php $",
            "<?php $a[",
            "<?php $a['",
            "<?php $a['k'] = -",
            "<?php $a['k'] = array(1 =>",
            "<?php $a['k'] = \"\\",
            "<?php $a['k'] = 1e",
            "<?php $a['k'] = 1.2.3;",
            "<?php $a['k'] = .5;",
            "<?php $a['k'] = -9223372036854775808;",
            "<?php @",
            "\u{feff}<?php $a['k'] = 'ü';",
            "<?php $a['ü'] = 'ü' ü",
        ] {
            let _ = parse_assignments(garbage);
        }
    }
}
