//! A dump's `INSERT INTO ... VALUES` rows turned into the text `LOAD DATA` reads, for tables
//! whose columns make that exact.
//!
//! The server parses `LOAD DATA` text far faster than the same rows as SQL, and the client
//! only copies it (measured on a 1 GiB WordPress-shaped dump: a third less time for tables of
//! small rows). Only tables whose every column takes a number or text literal qualify
//! ([`shape`]): for them a mariadb-dump writes nothing but quoted strings, bare numbers and
//! `NULL`, and each has one exact `LOAD DATA` spelling. Anything else a converter meets is an
//! error, never a guess.

use std::io;

/// The column types whose dumped values are plain: numbers, text, dates.
const PLAIN_TYPES: &[&str] = &[
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "integer",
    "bigint",
    "decimal",
    "numeric",
    "float",
    "double",
    "real",
    "date",
    "time",
    "datetime",
    "timestamp",
    "year",
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "enum",
    "set",
];

/// What a table's definition says about loading its rows as `LOAD DATA` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Values per row.
    pub columns: usize,
    /// Every text column is utf8mb4, so text sent in utf8mb4 needs no conversion and may be
    /// loaded as bytes.
    pub utf8mb4: bool,
}

/// The shape of a table from its `CREATE TABLE` statement as `SHOW CREATE TABLE` (and so
/// mariadb-dump) writes it: one column per line. None when a column is of another type
/// (binary, BLOB, BIT, spatial ...), generated or invisible, when the table is not InnoDB, is
/// partitioned or system-versioned, or when a line is not understood: its rows then load as
/// SQL.
pub fn shape(create: &[u8]) -> Option<Shape> {
    let text = std::str::from_utf8(create).ok()?;
    let open = text.find("CREATE TABLE")?;
    let body_start = open + text[open..].find("(\n")? + 2;
    let semi = text.rfind(';')?;
    let close = text[..semi].rfind("\n)")?;
    if close < body_start {
        return None;
    }
    let options = text[close + 2..semi].to_ascii_uppercase();
    if !options.contains("ENGINE=INNODB")
        || options.contains("PARTITION")
        || options.contains("VERSIONING")
    {
        return None;
    }
    let table_utf8mb4 = options.contains("CHARSET=UTF8MB4");
    let mut columns = 0;
    let mut utf8mb4 = table_utf8mb4;
    for line in text[body_start..close].lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('`') {
            // A column: `name` type ...; a doubled backtick is one in the name.
            let mut end = 0;
            let bytes = rest.as_bytes();
            loop {
                let at = end + rest[end..].find('`')?;
                if bytes.get(at + 1) == Some(&b'`') {
                    end = at + 2;
                } else {
                    end = at + 1;
                    break;
                }
            }
            let def = rest[end..].trim_start();
            let ty: String = def
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect::<String>()
                .to_ascii_lowercase();
            if !PLAIN_TYPES.contains(&ty.as_str()) {
                return None;
            }
            let upper = def.to_ascii_uppercase();
            if [
                " AS (",
                "GENERATED",
                "VIRTUAL",
                "PERSISTENT",
                "STORED",
                "INVISIBLE",
            ]
            .iter()
            .any(|w| upper.contains(w))
            {
                return None;
            }
            if let Some(at) = upper.find("CHARACTER SET ") {
                if !upper[at + 14..].starts_with("UTF8MB4 ") && upper[at + 14..] != *"UTF8MB4" {
                    utf8mb4 = false;
                }
            }
            columns += 1;
        } else if ![
            "PRIMARY KEY",
            "KEY ",
            "UNIQUE KEY",
            "FULLTEXT KEY",
            "CONSTRAINT ",
        ]
        .iter()
        .any(|k| line.starts_with(k))
        {
            return None;
        }
    }
    (columns > 0).then_some(Shape { columns, utf8mb4 })
}

/// Where a converter is in the rows of one `INSERT` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a row's `(`, or the `;` that ends the statement.
    BeforeRow,
    /// After a row's `)`: a `,` or the `;`.
    AfterRow,
    /// Where a value starts.
    Value,
    /// In a quoted string (its quote).
    Quoted(u8),
    /// After a backslash in a string.
    Escape(u8),
    /// After what may be a string's closing quote, or the first of a doubled one.
    QuoteEnd(u8),
    /// In a bare value (a number or NULL).
    Bare,
    /// After a value: `,` or `)`.
    AfterValue,
    /// The statement has ended.
    End,
}

/// Turns the rows of `INSERT INTO t VALUES (...),(...);` statements, fed from just after
/// `VALUES`, into `LOAD DATA` text: fields ended by a tab, rows by a newline, `\` escaping,
/// NULL as `\N`.
#[derive(Debug)]
pub struct RowText {
    columns: usize,
    state: State,
    /// Values so far in the current row.
    fields: usize,
    bare: Vec<u8>,
    rows: u64,
}

impl RowText {
    pub fn new(columns: usize) -> RowText {
        RowText {
            columns,
            state: State::End,
            fields: 0,
            bare: Vec::new(),
            rows: 0,
        }
    }

    /// A new statement's rows follow.
    pub fn start(&mut self) {
        self.state = State::BeforeRow;
    }

    /// Whether the statement fed so far has ended with its `;`.
    pub fn ended(&self) -> bool {
        self.state == State::End
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Converts `buf`, part of a statement, appending the text to `out`.
    pub fn feed(&mut self, buf: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::End => {
                    if !b.is_ascii_whitespace() {
                        return Err(bad("text after the end of an INSERT"));
                    }
                }
                State::BeforeRow | State::AfterRow => match b {
                    b'(' if self.state == State::BeforeRow => {
                        self.fields = 0;
                        self.state = State::Value;
                    }
                    b',' if self.state == State::AfterRow => self.state = State::BeforeRow,
                    b';' if self.state == State::AfterRow => self.state = State::End,
                    _ if b.is_ascii_whitespace() => {}
                    _ => return Err(bad("a row that does not start with `(`")),
                },
                State::Value => match b {
                    b'\'' | b'"' => self.state = State::Quoted(b),
                    _ if b.is_ascii_whitespace() => {}
                    b',' | b')' => return Err(bad("an empty value")),
                    _ => {
                        self.bare.clear();
                        self.state = State::Bare;
                        continue;
                    }
                },
                State::Quoted(q) => {
                    let rest = &buf[i..];
                    let at = memchr::memchr2(q, b'\\', rest).unwrap_or(rest.len());
                    copy_text(&rest[..at], out);
                    i += at;
                    match rest.get(at) {
                        None => return Ok(()),
                        Some(b'\\') => self.state = State::Escape(q),
                        Some(_) => self.state = State::QuoteEnd(q),
                    }
                }
                State::Escape(q) => {
                    // SQL's escapes, as LOAD DATA spells them; `\%` and `\_` keep their
                    // backslash in SQL.
                    match b {
                        b'0' | b'b' | b'n' | b'r' | b't' | b'Z' | b'\\' => {
                            out.push(b'\\');
                            out.push(b);
                        }
                        b'%' | b'_' => {
                            out.extend_from_slice(b"\\\\");
                            out.push(b);
                        }
                        _ => copy_text(&[b], out),
                    }
                    self.state = State::Quoted(q);
                }
                State::QuoteEnd(q) => {
                    if b == q {
                        out.push(q);
                        self.state = State::Quoted(q);
                    } else {
                        self.state = State::AfterValue;
                        continue;
                    }
                }
                State::Bare => {
                    if b == b',' || b == b')' || b.is_ascii_whitespace() {
                        if self.bare.eq_ignore_ascii_case(b"NULL") {
                            out.extend_from_slice(b"\\N");
                        } else if !self.bare.is_empty()
                            && self
                                .bare
                                .iter()
                                .all(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                        {
                            out.extend_from_slice(&self.bare);
                        } else {
                            return Err(bad(&format!(
                                "a value other than a string, a number or NULL: {}",
                                String::from_utf8_lossy(&self.bare[..self.bare.len().min(40)])
                            )));
                        }
                        self.state = State::AfterValue;
                        continue;
                    }
                    if self.bare.len() >= 64 {
                        return Err(bad("a bare value longer than a number"));
                    }
                    self.bare.push(b);
                }
                State::AfterValue => match b {
                    b',' => {
                        self.fields += 1;
                        out.push(b'\t');
                        self.state = State::Value;
                    }
                    b')' => {
                        self.fields += 1;
                        if self.fields != self.columns {
                            return Err(bad(&format!(
                                "a row of {} values for {} columns",
                                self.fields, self.columns
                            )));
                        }
                        out.push(b'\n');
                        self.rows += 1;
                        self.state = State::AfterRow;
                    }
                    _ if b.is_ascii_whitespace() => {}
                    _ => return Err(bad("a value not followed by `,` or `)`")),
                },
            }
            i += 1;
        }
        Ok(())
    }
}

/// Copies string bytes, escaping what ends a LOAD DATA field or line.
fn copy_text(text: &[u8], out: &mut Vec<u8>) {
    let mut rest = text;
    while let Some(at) = memchr::memchr3(b'\n', b'\r', b'\t', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(match rest[at] {
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\t",
        });
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cannot load the rows as LOAD DATA text: {what}"),
    )
}

/// The session a dump's rows load under, as its connection reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sql_mode: String,
    pub time_zone: String,
    pub unique_checks: bool,
    pub foreign_key_checks: bool,
    /// The character set the dump's text is in.
    pub charset: String,
    /// Whether the server takes LOCAL files at all.
    pub local_infile: bool,
}

/// The query whose answer [`Session::parse`] reads; its first field is `mark`.
pub fn session_query(mark: &str) -> String {
    format!(
        "SELECT '{mark}', @@SESSION.sql_mode, @@SESSION.time_zone, @@SESSION.unique_checks, \
         @@SESSION.foreign_key_checks, @@SESSION.character_set_client, @@GLOBAL.local_infile;\n"
    )
}

impl Session {
    /// The fields after the mark, as `mariadb -N -B` prints them. None when one is not as
    /// expected (the rows then load as SQL).
    pub fn parse(fields: &[String]) -> Option<Session> {
        let [sql_mode, time_zone, unique, fk, charset, local] = fields else {
            return None;
        };
        let flag = |v: &str| match v {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let plain = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_,+-:/".contains(&b))
        };
        if !plain(sql_mode)
            || !plain(time_zone)
            || charset.is_empty()
            || !charset.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        Some(Session {
            sql_mode: sql_mode.clone(),
            time_zone: time_zone.clone(),
            unique_checks: flag(unique)?,
            foreign_key_checks: flag(fk)?,
            charset: charset.clone(),
            local_infile: flag(local)?,
        })
    }

    /// The statements a second client runs to load `table`'s rows from its standard input,
    /// in this session's settings and in one transaction (as the dump's own rows load:
    /// InnoDB then builds an empty table's indexes in bulk).
    pub fn load_sql(&self, table: &[u8], shape: Shape) -> String {
        let name = String::from_utf8_lossy(table).replace('`', "``");
        // Text in utf8mb4 for utf8mb4 columns goes in as bytes: the server still checks it
        // is well formed, but converts nothing.
        let charset = if shape.utf8mb4 && self.charset == "utf8mb4" {
            "binary"
        } else {
            &self.charset
        };
        format!(
            "SET SESSION sql_mode='{}', time_zone='{}', unique_checks={}, foreign_key_checks={}, \
             autocommit=0; LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE `{name}` CHARACTER SET {charset} \
             FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'; COMMIT;",
            self.sql_mode,
            self.time_zone,
            u8::from(self.unique_checks),
            u8::from(self.foreign_key_checks),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(columns: usize, statements: &[&str], piece: usize) -> io::Result<String> {
        let mut r = RowText::new(columns);
        let mut out = Vec::new();
        for s in statements {
            r.start();
            for chunk in s.as_bytes().chunks(piece) {
                r.feed(chunk, &mut out)?;
            }
            assert!(r.ended(), "{s}");
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn values_become_load_data_text() {
        let rows = [
            "\n(1,'plain',NULL,-2.5e-3),(2,'it\\'s \"q\" ''d''','tab\there',0),\n",
            "(3,'\\0\\b\\n\\r\\t\\Z\\\\ \\% \\_ \\x','日本; ✓',NULL);",
        ];
        let want = "1\tplain\t\\N\t-2.5e-3\n\
2\tit's \"q\" 'd'\ttab\\there\t0\n\
3\t\\0\\b\\n\\r\\t\\Z\\\\ \\\\% \\\\_ x\t日本; ✓\t\\N\n";
        for piece in [1, 2, 3, 7, 1000] {
            let joined = format!("{}{}", rows[0], rows[1].trim_start_matches('\n'));
            assert_eq!(convert(4, &[&joined], piece).unwrap(), want, "{piece}");
        }
        // Statements in a row feed one text; raw line ends and tabs in a string are escaped.
        assert_eq!(
            convert(2, &[" (1,'a\nb\rc');", "\n(2,\"x\ty\");"], 5).unwrap(),
            "1\ta\\nb\\rc\n2\tx\\ty\n"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for (cols, sql, why) in [
            (1, "(0x41);", "a value other than"),
            (1, "(_binary 'a');", "a value other than"),
            (1, "(b'101');", "a value other than"),
            (2, "(1);", "a row of 1 values for 2 columns"),
            (1, "(1,2);", "a row of 2 values for 1 columns"),
            (1, "(1) SELECT;", "a row that does not start"),
            (1, "();", "an empty value"),
            (1, "('a' 'b');", "not followed by"),
            (1, "(1); (2)", "text after the end"),
        ] {
            let e = convert(cols, &[sql], 3).unwrap_err();
            assert!(e.to_string().contains(why), "{sql}: {e}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        }
    }

    const WP_POSTS: &str = "\nCREATE TABLE `wp_posts` (\n  `ID` bigint(20) unsigned NOT NULL AUTO_INCREMENT,\n  \
`post_date` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',\n  `post_content` longtext NOT NULL,\n  \
`post_status` varchar(20) NOT NULL DEFAULT 'publish',\n  `menu_order` int(11) NOT NULL DEFAULT 0,\n  \
`price` decimal(10,2) DEFAULT NULL,\n  `kind` enum('a','b') NOT NULL,\n  \
PRIMARY KEY (`ID`),\n  KEY `type_status_date` (`post_status`,`post_date`,`ID`)\n\
) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;";

    #[test]
    fn plain_tables_have_a_shape() {
        assert_eq!(
            shape(WP_POSTS.as_bytes()),
            Some(Shape {
                columns: 7,
                utf8mb4: true
            })
        );
        let latin1 = WP_POSTS.replace(
            "`post_content` longtext NOT NULL",
            "`post_content` longtext CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL",
        );
        assert_eq!(
            shape(latin1.as_bytes()),
            Some(Shape {
                columns: 7,
                utf8mb4: false
            })
        );
        let t = WP_POSTS.replace("DEFAULT CHARSET=utf8mb4", "DEFAULT CHARSET=utf8mb3");
        assert_eq!(shape(t.as_bytes()).map(|s| s.utf8mb4), Some(false));
        let names = WP_POSTS.replace("`kind`", "`a``b`");
        assert_eq!(shape(names.as_bytes()).map(|s| s.columns), Some(7));
    }

    #[test]
    fn other_tables_have_none() {
        for (from, to) in [
            ("`kind` enum('a','b')", "`kind` blob"),
            ("`kind` enum('a','b')", "`kind` varbinary(10)"),
            ("`kind` enum('a','b')", "`kind` bit(1)"),
            ("`kind` enum('a','b')", "`kind` point"),
            (
                "`kind` enum('a','b') NOT NULL",
                "`kind` int(11) GENERATED ALWAYS AS (`ID` + 1) VIRTUAL",
            ),
            ("`kind` enum('a','b') NOT NULL", "`kind` int(11) INVISIBLE"),
            ("ENGINE=InnoDB", "ENGINE=MyISAM"),
            (
                "utf8mb4_unicode_520_ci;",
                "utf8mb4_unicode_520_ci\n PARTITION BY HASH (`ID`);",
            ),
            (
                "utf8mb4_unicode_520_ci;",
                "utf8mb4_unicode_520_ci WITH SYSTEM VERSIONING;",
            ),
            ("  PRIMARY KEY", "  PERIOD FOR p(`a`, `b`),\n  PRIMARY KEY"),
        ] {
            let t = WP_POSTS.replace(from, to);
            assert_ne!(t, WP_POSTS);
            assert_eq!(shape(t.as_bytes()), None, "{t}");
        }
    }

    #[test]
    fn the_session_is_read_and_set_again() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = Session::parse(&f(&[
            "NO_AUTO_VALUE_ON_ZERO",
            "+00:00",
            "0",
            "0",
            "utf8mb4",
            "1",
        ]))
        .unwrap();
        assert!(s.local_infile);
        let shape = Shape {
            columns: 2,
            utf8mb4: true,
        };
        assert_eq!(
            s.load_sql(b"a`b", shape),
            "SET SESSION sql_mode='NO_AUTO_VALUE_ON_ZERO', time_zone='+00:00', unique_checks=0, \
             foreign_key_checks=0, autocommit=0; LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE \
             `a``b` CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES \
             TERMINATED BY '\\n'; COMMIT;"
        );
        let latin = Shape {
            utf8mb4: false,
            ..shape
        };
        assert!(s.load_sql(b"t", latin).contains("CHARACTER SET utf8mb4 "));
        assert!(session_query("m1").starts_with("SELECT 'm1', @@SESSION.sql_mode"));
        // What cannot be repeated safely is not used.
        assert_eq!(
            Session::parse(&f(&["A'B", "+00:00", "0", "0", "utf8mb4", "1"])),
            None
        );
        assert_eq!(
            Session::parse(&f(&["", "SYSTEM", "0", "ON", "utf8mb4", "1"])),
            None
        );
        assert_eq!(Session::parse(&f(&["", "SYSTEM"])), None);
        let off = Session::parse(&f(&["", "SYSTEM", "1", "0", "latin1", "0"])).unwrap();
        assert!(!off.local_infile && off.sql_mode.is_empty());
    }
}
