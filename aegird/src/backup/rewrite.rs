//! Rewrites a site's URL inside a streamed mysqldump, keeping PHP-serialized values valid.

use std::borrow::Cow;
use std::io::{self, Write};

/// Output is handed on in pieces of about this size, so the consumer sees few large writes.
const FLUSH_AT: usize = 64 * 1024;
/// Input taken per `write`: bounds what one call can buffer (besides the literal being read).
const MAX_CHUNK: usize = 64 * 1024;
/// Far deeper than any real PHP value; keeps hostile data from exhausting the parser's stack.
const MAX_DEPTH: usize = 64;

/// What a rewrite changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// String literals whose value changed.
    pub literals_changed: u64,
    /// Of those, the PHP-serialized ones that were re-serialized with recomputed lengths.
    pub serialized_fixed: u64,
}

/// Where the scanner is in the SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// After a `-` in code: a second one starts a comment line.
    Dash,
    /// In a `-- ...` line.
    Comment,
    /// In a `` `identifier` ``.
    Identifier,
    /// In a `"..."` string (trigger and routine bodies): copied, never rewritten, but its
    /// apostrophes must not open a literal.
    DoubleQuoted,
    DoubleQuotedEscape,
    /// In a `'...'` literal, whose raw bytes are buffered until it ends.
    Literal,
    LiteralEscape,
    /// After a quote inside a literal: a second quote is an escaped quote, anything else ends it.
    LiteralQuote,
}

/// A streaming filter: writes a dump through to `inner` with the URL pairs applied to every
/// single-quoted string literal. Call [`Rewriter::finish`]: output is buffered until then.
pub struct Rewriter<W: Write> {
    inner: W,
    replacements: Replacements,
    state: State,
    /// Raw bytes of the literal being read, escapes as they came.
    literal: Vec<u8>,
    /// Whether `literal` holds an escape, i.e. whether its value differs from its bytes.
    escaped: bool,
    /// Scratch space for the unescaped value, reused between literals.
    value: Vec<u8>,
    out: Vec<u8>,
    stats: Stats,
}

impl<W: Write> Rewriter<W> {
    /// `pairs`: (from, to) byte strings, applied in order to every string literal's unescaped value.
    pub fn new(inner: W, pairs: Vec<(String, String)>) -> Self {
        Self {
            inner,
            replacements: Replacements::new(pairs),
            state: State::Code,
            literal: Vec::new(),
            escaped: false,
            value: Vec::new(),
            out: Vec::with_capacity(FLUSH_AT + MAX_CHUNK),
            stats: Stats::default(),
        }
    }

    /// The inner writer, as it is (after a failed write, to ask it why).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Writes out what is buffered and hands back the inner writer. Fails if the dump ended
    /// inside a string literal, which means it was truncated.
    pub fn finish(mut self) -> io::Result<(W, Stats)> {
        match self.state {
            State::Literal
            | State::LiteralEscape
            | State::DoubleQuoted
            | State::DoubleQuotedEscape => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the dump ended inside a string literal",
                ))
            }
            State::LiteralQuote => self.close_literal(),
            State::Code | State::Dash | State::Comment | State::Identifier => {}
        }
        self.drain()?;
        self.inner.flush()?;
        Ok((self.inner, self.stats))
    }

    fn feed(&mut self, mut input: &[u8]) {
        while let [first, ..] = input {
            let used = match self.state {
                State::Code => self.code(input),
                State::Dash => self.dash(*first),
                State::Comment => self.verbatim(input, |b| b == b'\n'),
                State::Identifier => self.verbatim(input, |b| b == b'`'),
                State::DoubleQuoted => self.double_quoted(input),
                State::DoubleQuotedEscape => {
                    self.out.push(*first);
                    self.state = State::DoubleQuoted;
                    1
                }
                State::Literal => self.literal(input),
                State::LiteralEscape => {
                    self.literal.push(*first);
                    self.state = State::Literal;
                    1
                }
                State::LiteralQuote => self.literal_quote(*first),
            };
            input = &input[used..];
        }
    }

    /// Copies code up to the next byte that may open a token; this is the fast path between literals.
    fn code(&mut self, input: &[u8]) -> usize {
        let Some(at) = input
            .iter()
            .position(|&b| matches!(b, b'\'' | b'`' | b'-' | b'"'))
        else {
            self.out.extend_from_slice(input);
            return input.len();
        };
        self.out.extend_from_slice(&input[..=at]);
        self.state = match input[at] {
            b'\'' => {
                self.literal.clear();
                self.escaped = false;
                State::Literal
            }
            b'`' => State::Identifier,
            b'-' => State::Dash,
            _ => State::DoubleQuoted,
        };
        at + 1
    }

    /// A lone `-` is a minus sign; only `--` starts a comment. Consumes nothing otherwise.
    fn dash(&mut self, byte: u8) -> usize {
        if byte == b'-' {
            self.out.push(byte);
            self.state = State::Comment;
            return 1;
        }
        self.state = State::Code;
        0
    }

    /// Copies through the first byte matching `end`, returning the bytes used and that byte.
    fn pass_until(&mut self, input: &[u8], end: impl Fn(u8) -> bool) -> (usize, Option<u8>) {
        match input.iter().position(|&b| end(b)) {
            Some(at) => {
                self.out.extend_from_slice(&input[..=at]);
                (at + 1, Some(input[at]))
            }
            None => {
                self.out.extend_from_slice(input);
                (input.len(), None)
            }
        }
    }

    /// A comment or an identifier: copied through its end, where code resumes.
    fn verbatim(&mut self, input: &[u8], end: impl Fn(u8) -> bool) -> usize {
        let (used, stop) = self.pass_until(input, end);
        if stop.is_some() {
            self.state = State::Code;
        }
        used
    }

    fn double_quoted(&mut self, input: &[u8]) -> usize {
        let (used, stop) = self.pass_until(input, |b| b == b'"' || b == b'\\');
        match stop {
            Some(b'"') => self.state = State::Code,
            Some(_) => self.state = State::DoubleQuotedEscape,
            None => {}
        }
        used
    }

    fn literal(&mut self, input: &[u8]) -> usize {
        let Some(at) = input.iter().position(|&b| b == b'\'' || b == b'\\') else {
            self.literal.extend_from_slice(input);
            return input.len();
        };
        self.literal.extend_from_slice(&input[..at]);
        if input[at] == b'\\' {
            self.literal.push(b'\\');
            self.escaped = true;
            self.state = State::LiteralEscape;
        } else {
            self.state = State::LiteralQuote;
        }
        at + 1
    }

    /// `''` is SQL's other way to write a quote (SHOW CREATE TABLE uses it in comments and defaults).
    fn literal_quote(&mut self, byte: u8) -> usize {
        if byte == b'\'' {
            self.literal.extend_from_slice(b"''");
            self.escaped = true;
            self.state = State::Literal;
            return 1;
        }
        self.close_literal();
        0
    }

    /// Emits the literal's body and closing quote: as it came unless a pair matched.
    fn close_literal(&mut self) {
        self.state = State::Code;
        let value: &[u8] = if self.escaped {
            unescape_into(&self.literal, &mut self.value);
            &self.value
        } else {
            &self.literal
        };
        match self.replacements.rewrite(value) {
            Some((changed, kind)) => {
                self.stats.literals_changed += 1;
                if kind == Kind::Serialized {
                    self.stats.serialized_fixed += 1;
                }
                escape_into(&changed, &mut self.out);
            }
            None => self.out.extend_from_slice(&self.literal),
        }
        self.out.push(b'\'');
    }

    /// Writes out the buffer, keeping whatever the inner writer did not take, so a retry after
    /// an error neither loses nor repeats output.
    fn drain(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.out.len() {
                break Ok(());
            }
            match self.inner.write(&self.out[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.out.drain(..done);
        result
    }
}

impl<W: Write> Write for Rewriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Nothing to rewrite (a restore into the same uri): the dump goes through untouched,
        // without the cost of reading every literal.
        if self.replacements.pairs.is_empty() {
            return self.inner.write(buf);
        }
        // Flushing before taking input means an error never leaves input half-consumed.
        if self.out.len() >= FLUSH_AT {
            self.drain()?;
        }
        let n = buf.len().min(MAX_CHUNK);
        self.feed(&buf[..n]);
        Ok(n)
    }

    /// Writes out everything but an unfinished literal, which cannot be rewritten yet.
    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

/// Decodes mysqldump's escapes. `raw` comes from the scanner, so every escape is complete.
fn unescape_into(raw: &[u8], value: &mut Vec<u8>) {
    value.clear();
    let mut i = 0;
    while let Some(off) = raw[i..].iter().position(|&b| b == b'\\' || b == b'\'') {
        let at = i + off;
        value.extend_from_slice(&raw[i..at]);
        match (raw[at], raw.get(at + 1)) {
            (b'\\', Some(&code)) => push_unescaped(code, value),
            // The quote of a `''` pair.
            (byte, _) => value.push(byte),
        }
        i = (at + 2).min(raw.len());
    }
    value.extend_from_slice(&raw[i..]);
}

fn push_unescaped(code: u8, value: &mut Vec<u8>) {
    match code {
        b'0' => value.push(0),
        b'b' => value.push(0x08),
        b'n' => value.push(b'\n'),
        b'r' => value.push(b'\r'),
        b't' => value.push(b'\t'),
        b'Z' => value.push(0x1a),
        // Outside LIKE patterns MySQL keeps the backslash of these two.
        b'%' | b'_' => value.extend_from_slice(&[b'\\', code]),
        _ => value.push(code),
    }
}

/// Escapes the way mysqldump does (mysql_real_escape_string): tabs and backspaces stay raw.
fn escape_into(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        let code = match b {
            0 => b'0',
            b'\n' => b'n',
            b'\r' => b'r',
            0x1a => b'Z',
            b'\\' | b'\'' | b'"' => b,
            _ => {
                out.push(b);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', code]);
    }
}

/// How a literal's value was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Serialized,
}

/// One (from, to) pair.
struct Pair {
    from: Vec<u8>,
    to: Vec<u8>,
    /// Whether `from` ends inside a host name, so a match must end where the host does. A
    /// pattern ending in `/` or the like already carries its own boundary.
    host_end: bool,
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Whether a host name ending at `end` really ends there: `site1.test` must not match the
/// start of `site1.testing` or `site1.test.example.org`, but a full stop may end a sentence.
fn at_host_boundary(hay: &[u8], end: usize) -> bool {
    match hay.get(end) {
        Some(&b) if is_host_byte(b) => false,
        Some(b'.') => !hay.get(end + 1).is_some_and(u8::is_ascii_alphanumeric),
        _ => true,
    }
}

impl Pair {
    /// The first match at or after `start`.
    fn find(&self, hay: &[u8], mut start: usize) -> Option<usize> {
        let (&first, rest) = self.from.split_first()?;
        let last_start = hay.len().checked_sub(self.from.len())?;
        while start <= last_start {
            let at = start + hay[start..=last_start].iter().position(|&b| b == first)?;
            let end = at + self.from.len();
            if hay[at + 1..end] == *rest && (!self.host_end || at_host_boundary(hay, end)) {
                return Some(at);
            }
            start = at + 1;
        }
        None
    }

    fn replace(&self, hay: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len() + self.to.len());
        let mut done = 0;
        while let Some(at) = self.find(hay, done) {
            out.extend_from_slice(&hay[done..at]);
            out.extend_from_slice(&self.to);
            done = at + self.from.len();
        }
        out.extend_from_slice(&hay[done..]);
        out
    }
}

struct Replacements {
    pairs: Vec<Pair>,
}

impl Replacements {
    fn new(pairs: Vec<(String, String)>) -> Self {
        let pairs = pairs
            .into_iter()
            // An empty pattern would match everywhere and never advance.
            .filter(|(from, _)| !from.is_empty())
            .map(|(from, to)| {
                let from = from.into_bytes();
                let host_end = from.last().is_some_and(|&b| is_host_byte(b));
                Pair {
                    from,
                    to: to.into_bytes(),
                    host_end,
                }
            })
            .collect();
        Self { pairs }
    }

    /// If no pair matches the original, none can match after the others ran either: nothing
    /// changes, so this check alone decides whether a value needs the slow path.
    fn any_match(&self, hay: &[u8]) -> bool {
        self.pairs.iter().any(|p| p.find(hay, 0).is_some())
    }

    fn replace_all(&self, hay: &[u8]) -> Vec<u8> {
        let mut value = hay.to_vec();
        for pair in &self.pairs {
            if pair.find(&value, 0).is_some() {
                value = pair.replace(&value);
            }
        }
        value
    }

    /// The new value of a literal, or None if it stays as it is.
    fn rewrite(&self, value: &[u8]) -> Option<(Vec<u8>, Kind)> {
        if !self.any_match(value) {
            return None;
        }
        let (changed, kind) = match php::rewrite(value, self, 0) {
            Some(changed) => (changed, Kind::Serialized),
            None => (self.replace_all(value), Kind::Plain),
        };
        (changed != value).then_some((changed, kind))
    }

    /// A string inside serialized data: itself parsed if it is serialized data in turn.
    fn rewrite_nested<'a>(&self, content: &'a [u8], depth: usize) -> Cow<'a, [u8]> {
        if !self.any_match(content) {
            return Cow::Borrowed(content);
        }
        match php::rewrite(content, self, depth + 1) {
            Some(changed) => Cow::Owned(changed),
            None => Cow::Owned(self.replace_all(content)),
        }
    }
}

/// PHP `serialize()` output, parsed and re-emitted in one pass: every token is copied as it
/// came except strings, which are rewritten and get their byte length recomputed.
mod php {
    use super::{Replacements, MAX_DEPTH};

    /// The re-serialized value, or None if `value` is not exactly one serialized value.
    pub(super) fn rewrite(
        value: &[u8],
        replacements: &Replacements,
        depth: usize,
    ) -> Option<Vec<u8>> {
        let mut parser = Parser {
            src: value,
            pos: 0,
            out: Vec::with_capacity(value.len() + 32),
            replacements,
        };
        parser.value(depth)?;
        (parser.pos == value.len()).then_some(parser.out)
    }

    struct Parser<'a> {
        src: &'a [u8],
        pos: usize,
        out: Vec<u8>,
        replacements: &'a Replacements,
    }

    impl<'a> Parser<'a> {
        fn value(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            let start = self.pos;
            match self.next()? {
                b'N' => {}
                b'b' => {
                    self.expect(b':')?;
                    if !matches!(self.next()?, b'0' | b'1') {
                        return None;
                    }
                }
                b'i' => {
                    self.expect(b':')?;
                    if matches!(self.peek(), Some(b'+' | b'-')) {
                        self.pos += 1;
                    }
                    self.count()?;
                }
                b'd' => {
                    self.expect(b':')?;
                    self.float()?;
                }
                b'r' | b'R' => {
                    self.expect(b':')?;
                    self.count()?;
                }
                b'E' => {
                    self.expect(b':')?;
                    self.quoted()?;
                }
                b's' => return self.string(depth),
                b'a' => return self.container(start, depth),
                b'O' => {
                    self.expect(b':')?;
                    self.quoted()?;
                    return self.container(start, depth);
                }
                b'C' => return self.custom(start),
                _ => return None,
            }
            self.expect(b';')?;
            self.copy_from(start);
            Some(())
        }

        /// `s:N:"...";` with N in bytes.
        fn string(&mut self, depth: usize) -> Option<()> {
            self.expect(b':')?;
            let content = self.quoted()?;
            self.expect(b';')?;
            let content = self.replacements.rewrite_nested(content, depth);
            self.out.extend_from_slice(b"s:");
            self.out
                .extend_from_slice(content.len().to_string().as_bytes());
            self.out.extend_from_slice(b":\"");
            self.out.extend_from_slice(&content);
            self.out.extend_from_slice(b"\";");
            Some(())
        }

        /// The `:N:{key value ...}` of an array or an object (whose class name is already read).
        fn container(&mut self, start: usize, depth: usize) -> Option<()> {
            self.expect(b':')?;
            let members = self.count()?;
            self.expect(b':')?;
            self.expect(b'{')?;
            self.copy_from(start);
            for _ in 0..members {
                if !matches!(self.peek()?, b'i' | b's') {
                    return None;
                }
                self.value(depth + 1)?;
                self.value(depth + 1)?;
            }
            self.expect(b'}')?;
            self.out.push(b'}');
            Some(())
        }

        /// `C:N:"Class":N:{payload}`: the class's own format, kept opaque.
        fn custom(&mut self, start: usize) -> Option<()> {
            self.expect(b':')?;
            self.quoted()?;
            self.expect(b':')?;
            let len = self.count()?;
            self.expect(b':')?;
            self.expect(b'{')?;
            self.take(len)?;
            self.expect(b'}')?;
            self.copy_from(start);
            Some(())
        }

        /// `N:"..."`, returning the N bytes between the quotes.
        fn quoted(&mut self) -> Option<&'a [u8]> {
            let len = self.count()?;
            self.expect(b':')?;
            self.expect(b'"')?;
            let content = self.take(len)?;
            self.expect(b'"')?;
            Some(content)
        }

        fn count(&mut self) -> Option<usize> {
            let digits = self.src[self.pos..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return None;
            }
            let mut n: usize = 0;
            for &d in &self.src[self.pos..self.pos + digits] {
                n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
            }
            self.pos += digits;
            Some(n)
        }

        /// Digits, sign, point, exponent, or PHP's INF and NAN: checked only as far as the
        /// value is copied as it came.
        fn float(&mut self) -> Option<()> {
            let len = self.src[self.pos..]
                .iter()
                .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
                .count();
            self.pos += len;
            (len > 0).then_some(())
        }

        fn take(&mut self, len: usize) -> Option<&'a [u8]> {
            let src: &'a [u8] = self.src;
            let end = self.pos.checked_add(len)?;
            let bytes = src.get(self.pos..end)?;
            self.pos = end;
            Some(bytes)
        }

        fn peek(&self) -> Option<u8> {
            self.src.get(self.pos).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let byte = self.peek()?;
            self.pos += 1;
            Some(byte)
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            (self.next()? == byte).then_some(())
        }

        fn copy_from(&mut self, start: usize) {
            self.out.extend_from_slice(&self.src[start..self.pos]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "//site1.test";
    const TO: &str = "//a-much-longer-name.test";

    fn feed_in_chunks(
        input: &[u8],
        pairs: &[(&str, &str)],
        chunk: usize,
    ) -> io::Result<(Vec<u8>, Stats)> {
        let pairs = pairs
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        let mut rewriter = Rewriter::new(Vec::new(), pairs);
        for piece in input.chunks(chunk.max(1)) {
            rewriter.write_all(piece)?;
        }
        rewriter.finish()
    }

    /// Rewrites whole, one byte at a time and in odd chunks, and insists all three agree.
    fn run_pairs(input: &[u8], pairs: &[(&str, &str)]) -> (Vec<u8>, Stats) {
        let whole = feed_in_chunks(input, pairs, input.len()).unwrap();
        for chunk in [1, 2, 3, 7] {
            let pieces = feed_in_chunks(input, pairs, chunk).unwrap();
            assert_eq!(pieces, whole, "chunks of {chunk} differ");
        }
        whole
    }

    fn run(input: &[u8]) -> (Vec<u8>, Stats) {
        run_pairs(input, &[(FROM, TO)])
    }

    #[test]
    fn without_pairs_the_dump_passes_through_untouched() {
        let dump = b"INSERT INTO t VALUES ('http://site1.test/a', 'it''s \\ x');\n-- end";
        for chunk in [1, 5, dump.len()] {
            let (out, stats) = feed_in_chunks(dump, &[], chunk).unwrap();
            assert_eq!(out, dump);
            assert_eq!(stats, Stats::default());
        }
    }

    fn stats(literals_changed: u64, serialized_fixed: u64) -> Stats {
        Stats {
            literals_changed,
            serialized_fixed,
        }
    }

    /// `s:N:"...";` for a test value, with N counted in bytes.
    fn ser(s: &[u8]) -> Vec<u8> {
        let mut out = format!("s:{}:\"", s.len()).into_bytes();
        out.extend_from_slice(s);
        out.extend_from_slice(b"\";");
        out
    }

    /// An independent mysqldump-style escaper, for building inputs.
    fn sql_quote(value: &[u8]) -> Vec<u8> {
        let mut out = vec![b'\''];
        for &b in value {
            match b {
                0 => out.extend_from_slice(b"\\0"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                0x1a => out.extend_from_slice(b"\\Z"),
                b'\\' | b'\'' | b'"' => out.extend_from_slice(&[b'\\', b]),
                _ => out.push(b),
            }
        }
        out.push(b'\'');
        out
    }

    fn insert(values: &[&[u8]]) -> Vec<u8> {
        let mut sql = b"INSERT INTO `t` VALUES (".to_vec();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                sql.push(b',');
            }
            sql.extend(sql_quote(v));
        }
        sql.extend_from_slice(b");\n");
        sql
    }

    /// The values of every single-quoted literal in `sql`, decoded independently of the module.
    fn literal_values(sql: &[u8]) -> Vec<Vec<u8>> {
        let mut values = Vec::new();
        let mut i = 0;
        while i < sql.len() {
            if sql[i] != b'\'' {
                i += 1;
                continue;
            }
            let mut value = Vec::new();
            i += 1;
            while sql[i] != b'\'' {
                if sql[i] == b'\\' {
                    i += 1;
                    value.push(match sql[i] {
                        b'0' => 0,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b'Z' => 0x1a,
                        b => b,
                    });
                } else {
                    value.push(sql[i]);
                }
                i += 1;
            }
            values.push(value);
            i += 1;
        }
        values
    }

    /// Checks every `s:N:"` in `value`, at any nesting depth: N bytes on, the string must end.
    fn serialized_lengths_ok(value: &[u8]) -> usize {
        let mut checked = 0;
        for start in 0..value.len() {
            let rest = &value[start..];
            if !rest.starts_with(b"s:") || (start > 0 && value[start - 1].is_ascii_alphanumeric()) {
                continue;
            }
            let digits = rest[2..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || rest.get(2 + digits..4 + digits) != Some(b":\"") {
                continue;
            }
            let n: usize = std::str::from_utf8(&rest[2..2 + digits])
                .unwrap()
                .parse()
                .unwrap();
            let body = 4 + digits;
            assert_eq!(
                rest.get(body + n..body + n + 2),
                Some(&b"\";"[..]),
                "bad length at {start} in {}",
                String::from_utf8_lossy(value)
            );
            checked += 1;
        }
        checked
    }

    #[test]
    fn plain_literal_is_rewritten() {
        let (out, st) = run(b"INSERT INTO `t` VALUES (1,'http://site1.test/x','other');\n");
        assert_eq!(
            out,
            b"INSERT INTO `t` VALUES (1,'http://a-much-longer-name.test/x','other');\n"
        );
        assert_eq!(st, stats(1, 0));
    }

    #[test]
    fn unmatched_literals_pass_through_byte_for_byte() {
        // Tab and `''` are not how mysqldump would re-escape them: kept as they came.
        let input = b"INSERT INTO t VALUES ('a\\tb','it''s','x\\%y','\\\\'),(-1,--\n2);\n";
        let (out, st) = run(input);
        assert_eq!(out, input);
        assert_eq!(st, stats(0, 0));
    }

    #[test]
    fn escapes_around_a_match() {
        let input =
            b"('He said \\\"http://site1.test\\\" and it\\'s C:\\\\dir\\\\','it''s //site1.test')";
        let (out, st) = run(input);
        assert_eq!(
            out,
            b"('He said \\\"http://a-much-longer-name.test\\\" and it\\'s C:\\\\dir\\\\','it\\'s //a-much-longer-name.test')"
        );
        assert_eq!(st, stats(2, 0));
    }

    #[test]
    fn match_split_across_writes() {
        let input = b"('see http://site1.test/page', 'x')";
        for split in 0..input.len() {
            let mut rewriter = Rewriter::new(Vec::new(), vec![(FROM.into(), TO.into())]);
            rewriter.write_all(&input[..split]).unwrap();
            rewriter.write_all(&input[split..]).unwrap();
            let (out, _) = rewriter.finish().unwrap();
            assert_eq!(
                out, b"('see http://a-much-longer-name.test/page', 'x')",
                "split at {split}"
            );
        }
    }

    #[test]
    fn identifiers_and_comments_with_quotes_are_copied() {
        let input = b"-- Dumping data for table `it's`\n--\n\
            /*!40101 SET NAMES utf8mb4 */;\n\
            INSERT INTO `we'ird` VALUES (-1,'//site1.test');\n\
            /*!50003 SET x = \"it's \\\" //site1.test\" */;\n\
            -- done: don't\n";
        let (out, st) = run(input);
        let expected = b"-- Dumping data for table `it's`\n--\n\
            /*!40101 SET NAMES utf8mb4 */;\n\
            INSERT INTO `we'ird` VALUES (-1,'//a-much-longer-name.test');\n\
            /*!50003 SET x = \"it's \\\" //site1.test\" */;\n\
            -- done: don't\n";
        assert_eq!(out, expected);
        assert_eq!(st, stats(1, 0));
    }

    #[test]
    fn host_boundaries() {
        let unchanged: &[&[u8]] = &[
            b"http://site1.testing",
            b"http://site1.test.example.org",
            b"http://site1.test-2",
            b"http://site1.test2",
        ];
        for value in unchanged {
            let input = insert(&[value]);
            assert_eq!(run(&input), (input.clone(), stats(0, 0)));
        }
        let changed: &[(&[u8], &[u8])] = &[
            (b"http://site1.test/", b"http://a-much-longer-name.test/"),
            (b"http://site1.test", b"http://a-much-longer-name.test"),
            (
                b"go to //site1.test's page",
                b"go to //a-much-longer-name.test's page",
            ),
            (
                b"see //site1.test. Bye",
                b"see //a-much-longer-name.test. Bye",
            ),
            (b"//site1.test:8080", b"//a-much-longer-name.test:8080"),
        ];
        for (value, expected) in changed {
            assert_eq!(run(&insert(&[value])), (insert(&[expected]), stats(1, 0)));
        }
    }

    #[test]
    fn a_pattern_ending_in_a_slash_needs_no_boundary() {
        let (out, _) = run_pairs(b"('//site1.test/abc')", &[("//site1.test/", "//new.test/")]);
        assert_eq!(out, b"('//new.test/abc')");
    }

    #[test]
    fn pairs_apply_in_order() {
        let pairs = [
            ("//site1.test", "//tmp.test"),
            ("//tmp.test", "//final.test"),
        ];
        let (out, st) = run_pairs(b"('//site1.test','//tmp.test')", &pairs);
        assert_eq!(out, b"('//final.test','//final.test')");
        assert_eq!(st, stats(2, 0));
    }

    #[test]
    fn serialized_string() {
        let input = insert(&[&ser(b"http://site1.test/wp")]);
        let (out, st) = run(&input);
        assert_eq!(out, insert(&[&ser(b"http://a-much-longer-name.test/wp")]));
        assert_eq!(st, stats(1, 1));
    }

    #[test]
    fn nested_array_with_scalars() {
        let value = [
            b"a:3:{i:0;".as_slice(),
            &ser(b"//site1.test"),
            b"s:1:\"k\";a:4:{i:1;b:1;i:2;d:0.5;i:-3;N;",
            &ser(b"u"),
            &ser(b"//site1.test/x"),
            b"}i:9;r:1;}",
        ]
        .concat();
        let expected = String::from_utf8(value.clone())
            .unwrap()
            .replace(
                "s:12:\"//site1.test\"",
                "s:25:\"//a-much-longer-name.test\"",
            )
            .replace(
                "s:14:\"//site1.test/x\"",
                "s:27:\"//a-much-longer-name.test/x\"",
            );
        let (out, st) = run(&insert(&[&value]));
        assert_eq!(out, insert(&[expected.as_bytes()]));
        assert_eq!(st, stats(1, 1));
    }

    #[test]
    fn object_with_protected_and_private_properties() {
        let value = [
            b"O:3:\"Foo\":3:{".as_slice(),
            &ser(b"\0*\0url"),
            &ser(b"http://site1.test"),
            &ser(b"\0Foo\0home"),
            &ser(b"//site1.test/"),
            &ser(b"n"),
            b"C:11:\"ArrayObject\":21:{x:i:0;a:0:{};m:a:0:{}}",
            b"}",
        ]
        .concat();
        let expected = [
            b"O:3:\"Foo\":3:{".as_slice(),
            &ser(b"\0*\0url"),
            &ser(b"http://a-much-longer-name.test"),
            &ser(b"\0Foo\0home"),
            &ser(b"//a-much-longer-name.test/"),
            &ser(b"n"),
            b"C:11:\"ArrayObject\":21:{x:i:0;a:0:{};m:a:0:{}}",
            b"}",
        ]
        .concat();
        let (out, st) = run(&insert(&[&value]));
        assert!(out.windows(8).any(|w| w == b"\\0*\\0url"));
        assert_eq!(out, insert(&[&expected]));
        assert_eq!(st, stats(1, 1));
    }

    #[test]
    fn serialized_inside_serialized() {
        let inner = |url: &[u8]| [b"a:1:{".as_slice(), &ser(b"url"), &ser(url), b"}"].concat();
        let outer = |url: &[u8]| {
            [
                b"a:2:{".as_slice(),
                &ser(b"data"),
                &ser(&inner(url)),
                &ser(b"n"),
                b"i:1;}",
            ]
            .concat()
        };
        let (out, st) = run(&insert(&[&outer(b"http://site1.test")]));
        assert_eq!(out, insert(&[&outer(b"http://a-much-longer-name.test")]));
        assert_eq!(st, stats(1, 1));
        assert_eq!(serialized_lengths_ok(&literal_values(&out)[0]), 5);
    }

    #[test]
    fn lengths_count_bytes_of_multibyte_text() {
        let value = ser("café ✓ //site1.test ünïcode".as_bytes());
        assert!(value.starts_with(b"s:32:"));
        let (out, st) = run(&insert(&[&value]));
        let expected = ser("café ✓ //a-much-longer-name.test ünïcode".as_bytes());
        assert!(expected.starts_with(b"s:45:"));
        assert_eq!(out, insert(&[&expected]));
        assert_eq!(st, stats(1, 1));
    }

    #[test]
    fn broken_serialized_gets_plain_replacement() {
        for (broken, fixed) in [
            (
                &b"s:99:\"http://site1.test\";"[..],
                &b"s:99:\"http://a-much-longer-name.test\";"[..],
            ),
            (
                b"a:2:{i:0;s:12:\"//site1.test\";}",
                b"a:2:{i:0;s:12:\"//a-much-longer-name.test\";}",
            ),
            (
                b"s:12:\"//site1.test\";trailing",
                b"s:12:\"//a-much-longer-name.test\";trailing",
            ),
        ] {
            let (out, st) = run(&insert(&[broken]));
            assert_eq!(out, insert(&[fixed]));
            assert_eq!(st, stats(1, 0));
        }
    }

    #[test]
    fn binary_bytes_pass_through() {
        let blob: &[u8] =
            b"INSERT INTO `b` VALUES (_binary '\x89PNG\\0\xff\xfe\\'\x80\\\\','\xc3\x28');\n";
        assert_eq!(run(blob), (blob.to_vec(), stats(0, 0)));
        let (out, st) = run(b"('\xff\xfe //site1.test \x80\\0')");
        assert_eq!(out, b"('\xff\xfe //a-much-longer-name.test \x80\\0')");
        assert_eq!(st, stats(1, 0));
    }

    #[test]
    fn unterminated_literal_is_an_error() {
        for input in [
            &b"INSERT INTO t VALUES ('abc"[..],
            b"('abc\\",
            b"('it''",
            b"(\"abc",
        ] {
            let err = feed_in_chunks(input, &[(FROM, TO)], 1).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
        // A closing quote at the very end is only known to be one when the input ends.
        let (out, st) = run(b"('//site1.test'");
        assert_eq!(out, b"('//a-much-longer-name.test'");
        assert_eq!(st, stats(1, 0));
    }

    #[test]
    fn a_literal_larger_than_a_chunk() {
        let mut value = vec![b'x'; 3 * MAX_CHUNK];
        value.extend_from_slice(b" //site1.test");
        let (out, st) = feed_in_chunks(&insert(&[&value]), &[(FROM, TO)], 5 * MAX_CHUNK).unwrap();
        value.truncate(3 * MAX_CHUNK);
        value.extend_from_slice(b" //a-much-longer-name.test");
        assert_eq!(out, insert(&[&value]));
        assert_eq!(st, stats(1, 0));
    }

    #[test]
    fn wordpress_options() {
        let widget = |host: &str| {
            let link = format!("<a href=\"http:{host}/about\">About</a>\n");
            [
                b"a:3:{i:2;a:3:{".as_slice(),
                &ser(b"title"),
                &ser("Liens – ça marche".as_bytes()),
                &ser(b"text"),
                &ser(link.as_bytes()),
                &ser(b"filter"),
                b"b:1;}i:3;a:1:{",
                &ser(b"url"),
                &ser(format!("https:{host}").as_bytes()),
                b"}",
                &ser(b"_multiwidget"),
                b"i:1;}",
            ]
            .concat()
        };
        let dump = |host: &str| {
            let mut sql = b"--\n-- Dumping data for table `wp_options`\n--\n\n\
                LOCK TABLES `wp_options` WRITE;\n\
                /*!40000 ALTER TABLE `wp_options` DISABLE KEYS */;\n\
                INSERT INTO `wp_options` VALUES "
                .to_vec();
            let rows: [(&str, Vec<u8>); 4] = [
                ("siteurl", format!("http:{host}").into_bytes()),
                ("home", format!("http:{host}").into_bytes()),
                ("widget_text", widget(host)),
                ("blogdescription", b"Just another WordPress site".to_vec()),
            ];
            for (id, (name, value)) in rows.iter().enumerate() {
                if id > 0 {
                    sql.push(b',');
                }
                sql.extend_from_slice(format!("({},", id + 1).as_bytes());
                sql.extend(sql_quote(name.as_bytes()));
                sql.push(b',');
                sql.extend(sql_quote(value));
                sql.extend_from_slice(b",'yes')");
            }
            sql.extend_from_slice(
                b";\n/*!40000 ALTER TABLE `wp_options` ENABLE KEYS */;\nUNLOCK TABLES;\n",
            );
            sql
        };
        let input = dump(FROM);
        assert!(
            input.windows(9).any(|w| w == b"</a>\\n\\\";"),
            "the link is escaped in the dump"
        );
        let (out, st) = run(&input);
        assert_eq!(out, dump(TO));
        assert_eq!(st, stats(3, 1));
        let values = literal_values(&out);
        let widget_value = values.iter().find(|v| v.starts_with(b"a:3:")).unwrap();
        assert_eq!(serialized_lengths_ok(widget_value), 8);
        assert!(values
            .iter()
            .all(|v| !v.windows(FROM.len()).any(|w| w == FROM.as_bytes())));
    }
}
