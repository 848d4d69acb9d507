//! Shares a streamed SQL dump's tables out among several connections of the database server,
//! so that a restore loads them in parallel, and keeps InnoDB's statistics thread quiet while
//! they load.
//!
//! Every connection ("lane") reads the whole dump through its own [`LaneWriter`]; they agree on
//! how it splits, because they split the same bytes the same way. Each runs every statement
//! that only sets its session (`SET`, `COMMIT`, `UNLOCK TABLES`), so all sessions stay alike,
//! and the statements of the table sections it claimed (`DROP`/`CREATE TABLE`, `LOCK TABLES`,
//! `INSERT INTO ... VALUES`, `ALTER TABLE ... KEYS`): a section is the run of statements about
//! one table, claimed by whichever lane gets to it first. A statement this module does not
//! know for certain to touch one table (a trigger, a view, `DELIMITER`, an `INSERT ... SELECT`,
//! a table seen before, a change of `sql_mode` that alters how text is quoted) is a *cut*: the
//! first lane waits for the others to finish, then runs everything from there on, byte for
//! byte, as a single connection would. So the parallel part only ever reorders row loads into
//! different tables, under `FOREIGN_KEY_CHECKS=0`, which cannot change the result.
//!
//! Each lane's bytes go to a `mariadb` client exactly as they came (comments included), so the
//! client splits them as it would have split the whole dump. The splitting here follows the
//! client's: `;` outside quotes and comments ends a statement, and `/*! ... */` is code.
//!
//! InnoDB recomputes a table's statistics once a tenth of it has changed, but at most every
//! ten seconds; while a table is being filled, MariaDB's statistics task spins on it in
//! between (measured: it took a whole core during an import, the import itself one). A
//! `CREATE TABLE` this lane runs therefore gets `STATS_AUTO_RECALC=0`, and the caller sets it
//! back with [`restore_stats_sql`] once the rows are in, which leaves the definition as it was.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::rows;

/// Bytes of a statement read before deciding where it goes (its first words are enough).
const PREFIX: usize = 4096;
/// A statement whose leading comments run longer than this is not worth parsing: a cut.
const MAX_UNDECIDED: usize = 64 * 1024;
/// A `CREATE TABLE` is held until its end to add the table option; a longer one is passed on
/// unchanged.
const MAX_CREATE: usize = 1 << 20;
/// An `INSERT` this long, the first of its table's, makes its rows worth loading as text (a
/// second client for a few rows costs more than it saves).
const TEXT_MIN: usize = 64 * 1024;
/// The option added to a `CREATE TABLE` while its rows load.
const PAUSE_STATS: &[u8] = b" STATS_AUTO_RECALC=0";

/// What all lanes of one import share.
pub struct Plan {
    lanes: usize,
    /// The next table section nobody has claimed yet.
    next: AtomicUsize,
    finished: Mutex<Finished>,
    changed: Condvar,
}

#[derive(Default)]
struct Finished {
    /// Lanes other than the first whose connection has ended.
    done: usize,
    failure: Option<String>,
}

impl Plan {
    pub fn new(lanes: usize) -> Arc<Plan> {
        Arc::new(Plan {
            lanes: lanes.max(1),
            next: AtomicUsize::new(0),
            finished: Mutex::new(Finished::default()),
            changed: Condvar::new(),
        })
    }

    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Lane 1, 2 ... says its connection has ended (its client has exited), well or not.
    pub fn lane_finished(&self, result: Result<(), String>) {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        f.done += 1;
        if let Err(e) = result {
            f.failure.get_or_insert(e);
        }
        self.changed.notify_all();
    }

    /// Lane 0 at a cut: waits until every other lane's connection has ended.
    fn wait_for_others(&self, cancel: &AtomicBool) -> io::Result<()> {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = &f.failure {
                return Err(io::Error::other(format!(
                    "a parallel connection failed: {e}"
                )));
            }
            if f.done + 1 >= self.lanes {
                return Ok(());
            }
            if cancel.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the operation was stopped",
                ));
            }
            f = self
                .changed
                .wait_timeout(f, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn claim(&self) -> usize {
        self.next.fetch_add(1, Ordering::SeqCst)
    }
}

/// What one lane did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneReport {
    /// Table sections this lane loaded (before any cut).
    pub sections: u64,
    /// Tables this lane created with their statistics paused, to be set back.
    pub paused: Vec<String>,
    /// Tables whose rows this lane loaded as `LOAD DATA` text (see `rows`).
    pub as_text: Vec<String>,
    /// Why the dump went on serially from some point, if it did (the same for every lane).
    pub cut: Option<String>,
}

/// A second client of a lane's database, loading one table's rows from its standard input.
pub trait Loader: Write + Send {
    /// Ends the rows and waits until the client has loaded them.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// What a lane needs from its connection to load rows as `LOAD DATA` text.
pub trait Loads: Send {
    /// The fields after `mark` of the line the lane's client printed for `SELECT 'mark',
    /// ...`: it has then run everything written to it before.
    fn answer(&mut self, mark: &str) -> io::Result<Vec<String>>;
    /// Starts a client of the same database that runs `sql`, fed on its standard input.
    fn start(&mut self, table: &[u8], sql: &str) -> io::Result<Box<dyn Loader>>;
}

/// Where the lane is in the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Parallel,
    /// Lane 0 after a cut: everything goes through unchanged.
    Serial,
    /// Any other lane after a cut: nothing more is its business.
    Stopped,
}

/// What becomes of the statement being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Its bytes are buffered until its first words are known.
    Undecided,
    /// A `CREATE TABLE` of this lane's, buffered to its end.
    Hold,
    Forward,
    Drop,
    /// An `INSERT` whose rows go to a [`Loader`] as text.
    Text,
}

/// How the rows of the section this lane is loading go in.
enum RowsAs {
    /// As the dump's SQL, through the lane's client.
    Sql,
    /// Perhaps as text: the table qualifies; its first `INSERT` will tell whether it is worth
    /// it. Its `LOCK TABLES` and `ALTER TABLE ... DISABLE KEYS` wait in `held` meanwhile.
    Undecided(rows::Shape),
    /// As text, through a second client.
    Text(Box<Loading>),
}

struct Loading {
    table: Vec<u8>,
    text: rows::RowText,
    loader: Box<dyn Loader>,
}

/// The error a stopped lane's writer returns, so its reader ends early.
pub const STOPPED: &str = "this connection's share of the dump is done";

/// One lane: a `Write` that passes on the part of the dump that is this lane's.
pub struct LaneWriter<W: Write> {
    inner: W,
    lane: usize,
    plan: Arc<Plan>,
    cancel: Arc<AtomicBool>,
    scan: Scanner,
    mode: Mode,
    route: Route,
    /// The current statement's bytes while `Undecided` or `Hold`.
    stmt: Vec<u8>,
    /// How much of an undecided statement to read before deciding.
    wait_for: usize,
    /// The current section's index and table.
    section: Option<(usize, Vec<u8>)>,
    seen: HashSet<Vec<u8>>,
    claim: Option<usize>,
    /// Whether the dump has turned foreign key checks off (sections may then load in any
    /// order).
    fk_off: bool,
    /// Set when rows may load as text; taken away when the server refuses LOCAL files.
    loads: Option<Box<dyn Loads>>,
    rows_as: RowsAs,
    held: Vec<u8>,
    text_out: Vec<u8>,
    report: LaneReport,
}

impl<W: Write> LaneWriter<W> {
    pub fn new(inner: W, lane: usize, plan: Arc<Plan>, cancel: Arc<AtomicBool>) -> Self {
        LaneWriter {
            inner,
            lane,
            plan,
            cancel,
            scan: Scanner::default(),
            mode: Mode::Parallel,
            route: Route::Undecided,
            stmt: Vec::new(),
            wait_for: PREFIX,
            section: None,
            seen: HashSet::new(),
            claim: None,
            fk_off: false,
            loads: None,
            rows_as: RowsAs::Sql,
            held: Vec::new(),
            text_out: Vec::new(),
            report: LaneReport::default(),
        }
    }

    /// Loads the rows of large tables that qualify (see `rows`) through second clients
    /// `loads` starts, as `LOAD DATA` text, instead of as SQL.
    pub fn with_loads(mut self, loads: Box<dyn Loads>) -> Self {
        self.loads = Some(loads);
        self
    }

    /// Whether this lane stopped at a cut (its reader's error is then [`STOPPED`], no failure).
    pub fn stopped(&self) -> bool {
        self.mode == Mode::Stopped
    }

    pub fn report(&self) -> &LaneReport {
        &self.report
    }

    /// Passes on what is left and hands back the inner writer.
    pub fn finish(mut self) -> io::Result<(W, LaneReport)> {
        if self.mode == Mode::Parallel {
            if self.route == Route::Text {
                return Err(io::Error::other("the dump ends inside an INSERT"));
            }
            self.end_text()?;
            self.flush_held()?;
            if !self.stmt.is_empty() {
                match self.route {
                    // The dump ends without a delimiter: only comments and blanks are
                    // harmless everywhere; a last statement runs once, as the client would
                    // run it.
                    Route::Undecided => match classify(&self.stmt, true) {
                        Some(Class::Empty) => self.flush_stmt()?,
                        _ => self.cut("a last statement without a delimiter".into())?,
                    },
                    Route::Hold => self.flush_stmt()?,
                    Route::Forward | Route::Drop | Route::Text => {}
                }
            }
        }
        self.inner.flush()?;
        Ok((self.inner, self.report))
    }

    fn flush_stmt(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.stmt)?;
        self.stmt.clear();
        Ok(())
    }

    /// Held statements go out before one that must follow them: the rows then go in as SQL.
    fn flush_held(&mut self) -> io::Result<()> {
        if !self.held.is_empty() {
            self.as_sql()?;
        }
        Ok(())
    }

    /// The section's rows go in as SQL after all, behind what was held.
    fn as_sql(&mut self) -> io::Result<()> {
        if matches!(self.rows_as, RowsAs::Undecided(_)) {
            self.rows_as = RowsAs::Sql;
        }
        self.inner.write_all(&self.held)?;
        self.held.clear();
        Ok(())
    }

    /// The rows being loaded as text have all been read: waits for their client.
    fn end_text(&mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.rows_as, RowsAs::Sql) {
            RowsAs::Text(loading) => {
                let Loading { table, loader, .. } = *loading;
                loader.finish().map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("loading `{}`: {e}", String::from_utf8_lossy(&table)),
                    )
                })
            }
            other => {
                self.rows_as = other;
                Ok(())
            }
        }
    }

    /// The converter and the splitter must agree on where an `INSERT` ends.
    fn check_rows_end(&self, ended: bool) -> io::Result<()> {
        let done = matches!(&self.rows_as, RowsAs::Text(l) if l.text.ended());
        if ended != done {
            return Err(io::Error::other(
                "an INSERT whose rows do not end where the statement ends",
            ));
        }
        Ok(())
    }

    /// From here on the dump runs on lane 0 alone, as it is.
    fn cut(&mut self, why: String) -> io::Result<()> {
        self.report.cut = Some(why);
        if self.lane == 0 {
            self.plan.wait_for_others(&self.cancel)?;
            self.mode = Mode::Serial;
            self.flush_held()?;
            self.flush_stmt()
        } else {
            self.mode = Mode::Stopped;
            self.stmt.clear();
            Err(io::Error::other(STOPPED))
        }
    }

    /// Decides where the buffered statement goes, once enough of it is known.
    fn decide(&mut self, ended: bool) -> io::Result<()> {
        let class = match classify(&self.stmt, ended) {
            Some(c) => c,
            None if self.stmt.len() > MAX_UNDECIDED => {
                Class::Cut("a statement behind a long comment".into())
            }
            None => return Ok(()),
        };
        // Rows loading as text end with the first statement that does not add to them, and
        // held statements go out before anything that is not about their table.
        let about_section = matches!(&class, Class::Bound { table, .. }
            if self.section.as_ref().is_some_and(|(_, t)| t == table));
        let more_rows = matches!(&class, Class::Bound { table, kind: Kind::Insert }
            if matches!(&self.rows_as, RowsAs::Text(l) if &l.table == table));
        if !more_rows {
            self.end_text()?;
        }
        if !about_section {
            self.flush_held()?;
        }
        match class {
            Class::Empty => {
                self.route = Route::Forward;
                self.flush_stmt()
            }
            Class::Session { fk } => {
                if let Some(off) = fk {
                    self.fk_off = off;
                }
                self.route = Route::Forward;
                self.flush_stmt()
            }
            Class::Cut(why) => self.cut(why),
            Class::Bound { table, kind } => {
                let current = self.section.as_ref().map(|(i, t)| (*i, t == &table));
                let index = match current {
                    Some((i, true)) => i,
                    _ => {
                        if self.seen.contains(&table) {
                            return self.cut(format!(
                                "`{}` comes back after other tables",
                                String::from_utf8_lossy(&table)
                            ));
                        }
                        if !self.fk_off {
                            return self.cut("foreign key checks are on".into());
                        }
                        let i = current.map_or(0, |(i, _)| i + 1);
                        self.rows_as = RowsAs::Sql;
                        self.seen.insert(table.clone());
                        self.section = Some((i, table.clone()));
                        // Claims go out in order, and a lane claims again as soon as it has
                        // passed its section, so a new claim is at or beyond this one.
                        if self.claim.is_none_or(|c| c < i) {
                            self.claim = Some(self.plan.claim());
                        }
                        if self.claim == Some(i) {
                            self.report.sections += 1;
                        }
                        i
                    }
                };
                if self.claim != Some(index) {
                    self.route = Route::Drop;
                    self.stmt.clear();
                    return Ok(());
                }
                match kind {
                    Kind::Create if !ended && self.stmt.len() < MAX_CREATE => {
                        self.route = Route::Hold;
                        Ok(())
                    }
                    Kind::Create if ended => {
                        self.route = Route::Hold;
                        self.end_held(&table)
                    }
                    Kind::Insert => self.insert(ended, table),
                    Kind::Other if matches!(self.rows_as, RowsAs::Undecided(_)) && ended => {
                        self.held.append(&mut self.stmt);
                        self.route = Route::Drop;
                        Ok(())
                    }
                    _ => {
                        self.as_sql()?;
                        self.route = Route::Forward;
                        self.flush_stmt()
                    }
                }
            }
        }
    }

    /// An `INSERT` of this lane's section: its rows go as SQL or as text.
    fn insert(&mut self, ended: bool, table: Vec<u8>) -> io::Result<()> {
        let undecided = match self.rows_as {
            RowsAs::Undecided(shape) => Some(shape),
            _ => None,
        };
        // A table whose first INSERT is short has only that one: as SQL.
        if undecided.is_some() && !ended && self.stmt.len() < TEXT_MIN {
            self.wait_for = TEXT_MIN;
            return Ok(());
        }
        let values = values_start(&self.stmt);
        if let Some(shape) = undecided {
            match values {
                Some(_) if !ended => self.start_text(table, shape)?,
                _ => self.as_sql()?,
            }
        }
        if matches!(self.rows_as, RowsAs::Text(_)) {
            let at = values
                .ok_or_else(|| io::Error::other("an INSERT with a column list among rows"))?;
            // Taken out to be fed from while `self` is borrowed, then put back for its
            // allocation.
            let stmt = std::mem::take(&mut self.stmt);
            self.route = Route::Text;
            if let RowsAs::Text(l) = &mut self.rows_as {
                l.text.start();
            }
            self.feed_text(&stmt[at..])?;
            self.stmt = stmt;
            self.stmt.clear();
            return self.check_rows_end(ended);
        }
        self.route = Route::Forward;
        self.flush_stmt()
    }

    /// Asks the client where it stands (it has then created the table), and starts a second
    /// client on the rows, unless the session cannot be repeated or LOCAL files are refused.
    fn start_text(&mut self, table: Vec<u8>, shape: rows::Shape) -> io::Result<()> {
        let Some(loads) = self.loads.as_mut() else {
            return self.as_sql();
        };
        let mark = format!("aegir-rows-{}", self.report.as_text.len() + 1);
        self.inner
            .write_all(rows::session_query(&mark).as_bytes())?;
        self.inner.flush()?;
        let session = rows::Session::parse(&loads.answer(&mark)?);
        let Some(session) = session.filter(|s| s.local_infile) else {
            self.loads = None;
            return self.as_sql();
        };
        let loader = loads.start(&table, &session.load_sql(&table, shape))?;
        // The table's lock would keep the other client out; its keys are InnoDB's, which
        // ignores DISABLE KEYS.
        self.held.clear();
        self.report
            .as_text
            .push(String::from_utf8_lossy(&table).into_owned());
        self.rows_as = RowsAs::Text(Box::new(Loading {
            table,
            text: rows::RowText::new(shape.columns),
            loader,
        }));
        Ok(())
    }

    fn feed_text(&mut self, piece: &[u8]) -> io::Result<()> {
        if let RowsAs::Text(l) = &mut self.rows_as {
            l.text.feed(piece, &mut self.text_out)?;
            l.loader.write_all(&self.text_out)?;
            self.text_out.clear();
        }
        Ok(())
    }

    /// A held `CREATE TABLE` is complete: pass it on with its statistics paused if it can be.
    fn end_held(&mut self, table: &[u8]) -> io::Result<()> {
        if self.loads.is_some() {
            if let Some(shape) = rows::shape(&self.stmt) {
                self.rows_as = RowsAs::Undecided(shape);
            }
        }
        if let Some(with_pause) = pause_stats(&self.stmt) {
            self.stmt = with_pause;
            self.report
                .paused
                .push(String::from_utf8_lossy(table).into_owned());
        }
        self.flush_stmt()
    }
}

impl<W: Write> Write for LaneWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match self.mode {
                Mode::Serial => {
                    self.inner.write_all(rest)?;
                    break;
                }
                Mode::Stopped => return Err(io::Error::other(STOPPED)),
                Mode::Parallel => {}
            }
            let (n, ended) = self.scan.feed(rest);
            let (piece, after) = rest.split_at(n);
            rest = after;
            match self.route {
                Route::Forward => self.inner.write_all(piece)?,
                Route::Drop => {}
                Route::Text => {
                    self.feed_text(piece)?;
                    self.check_rows_end(ended)?;
                }
                Route::Undecided | Route::Hold => {
                    self.stmt.extend_from_slice(piece);
                    if self.route == Route::Undecided && (ended || self.stmt.len() >= self.wait_for)
                    {
                        self.decide(ended)?;
                    } else if self.route == Route::Hold && (ended || self.stmt.len() >= MAX_CREATE)
                    {
                        if ended {
                            let table = self
                                .section
                                .as_ref()
                                .map(|(_, t)| t.clone())
                                .unwrap_or_default();
                            self.end_held(&table)?;
                        } else {
                            self.route = Route::Forward;
                            self.flush_stmt()?;
                        }
                    }
                }
            }
            if ended && self.mode == Mode::Parallel {
                self.route = Route::Undecided;
                self.wait_for = PREFIX;
                self.stmt.clear();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The SQL that sets back what [`LaneWriter`] paused, for the tables of `db` named.
pub fn restore_stats_sql(db: &str, tables: &[String]) -> String {
    let q = |s: &str| s.replace('`', "``");
    let mut sql = String::new();
    for t in tables {
        sql.push_str(&format!(
            "ALTER TABLE `{}`.`{}` STATS_AUTO_RECALC=DEFAULT;\n",
            q(db),
            q(t)
        ));
    }
    if !tables.is_empty() {
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("`{}`.`{}`", q(db), q(t)))
            .collect();
        sql.push_str(&format!("ANALYZE TABLE {};\n", names.join(", ")));
    }
    sql
}

/// `stmt` (a whole `CREATE TABLE ... ;`) with `STATS_AUTO_RECALC=0` added to its table
/// options, when they are plain InnoDB options that end the statement: not when it has
/// partitions, system versioning, a statistics option of its own, or an ending this function
/// does not recognise (then it loads as it is, only slower).
fn pause_stats(stmt: &[u8]) -> Option<Vec<u8>> {
    let semi = stmt.iter().rposition(|&b| b == b';')?;
    let body = &stmt[..semi];
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    let close = body[..end].iter().rposition(|&b| b == b')')?;
    let options = body[close + 1..end].to_ascii_uppercase();
    let last = *body.get(end - 1)?;
    let plain_end = last.is_ascii_alphanumeric() || last == b'_' || last == b'\'';
    let has = |w: &[u8]| options.windows(w.len()).any(|x| x == w);
    if !plain_end
        || !has(b"ENGINE=INNODB")
        || has(b"PARTITION")
        || has(b"STATS_")
        || has(b"VERSIONING")
        || has(b"/*")
        || has(b"*/")
    {
        return None;
    }
    let mut out = Vec::with_capacity(stmt.len() + PAUSE_STATS.len());
    out.extend_from_slice(&body[..end]);
    out.extend_from_slice(PAUSE_STATS);
    out.extend_from_slice(&stmt[end..]);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Splitting: where statements end, as the mariadb client sees it
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Code,
    /// After `-` in code.
    Dash,
    /// After `--` in code: a blank or control byte makes it a comment.
    DashDash,
    /// After `/` in code.
    Slash,
    /// After `/*`: `!` or `M!` make it code (an executable comment).
    SlashStar,
    SlashStarM,
    LineComment,
    BlockComment,
    BlockStar,
    /// In a `'...'` or `"..."` string (the quote it ends with); backslash escapes.
    Quoted(u8),
    QuotedEscape(u8),
    Backtick,
}

#[derive(Debug, Default)]
struct Scanner {
    state: State,
}

impl Scanner {
    /// Reads `buf` up to and including the `;` that ends a statement, if there is one:
    /// (bytes read, whether a statement ended).
    fn feed(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                State::Code => match b {
                    b';' => return (i + 1, true),
                    b'\'' | b'"' => self.state = State::Quoted(b),
                    b'`' => self.state = State::Backtick,
                    b'#' => self.state = State::LineComment,
                    b'-' => self.state = State::Dash,
                    b'/' => self.state = State::Slash,
                    _ => {}
                },
                State::Dash => {
                    if b == b'-' {
                        self.state = State::DashDash;
                    } else {
                        self.state = State::Code;
                        continue;
                    }
                }
                State::DashDash => {
                    if b <= b' ' {
                        self.state = if b == b'\n' {
                            State::Code
                        } else {
                            State::LineComment
                        };
                    } else {
                        self.state = State::Code;
                        continue;
                    }
                }
                State::Slash => {
                    if b == b'*' {
                        self.state = State::SlashStar;
                    } else {
                        self.state = State::Code;
                        continue;
                    }
                }
                State::SlashStar => match b {
                    b'!' => self.state = State::Code,
                    b'M' => self.state = State::SlashStarM,
                    _ => {
                        self.state = State::BlockComment;
                        continue;
                    }
                },
                State::SlashStarM => {
                    if b == b'!' {
                        self.state = State::Code;
                    } else {
                        self.state = State::BlockComment;
                        continue;
                    }
                }
                State::LineComment => match memchr::memchr(b'\n', &buf[i..]) {
                    Some(at) => {
                        i += at;
                        self.state = State::Code;
                    }
                    None => return (buf.len(), false),
                },
                State::BlockComment => match memchr::memchr(b'*', &buf[i..]) {
                    Some(at) => {
                        i += at;
                        self.state = State::BlockStar;
                    }
                    None => return (buf.len(), false),
                },
                State::BlockStar => match b {
                    b'/' => self.state = State::Code,
                    b'*' => {}
                    _ => self.state = State::BlockComment,
                },
                State::Quoted(quote) => match memchr::memchr2(quote, b'\\', &buf[i..]) {
                    Some(at) => {
                        i += at;
                        self.state = if buf[i] == b'\\' {
                            State::QuotedEscape(quote)
                        } else {
                            State::Code
                        };
                    }
                    None => return (buf.len(), false),
                },
                State::QuotedEscape(quote) => self.state = State::Quoted(quote),
                State::Backtick => match memchr::memchr(b'`', &buf[i..]) {
                    Some(at) => {
                        i += at;
                        self.state = State::Code;
                    }
                    None => return (buf.len(), false),
                },
            }
            i += 1;
        }
        (buf.len(), false)
    }
}

// ---------------------------------------------------------------------------------------------
// Classifying: what a statement touches, from its first words
// ---------------------------------------------------------------------------------------------

/// Which statement about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    /// `INSERT INTO t VALUES` (perhaps with a column list).
    Insert,
    /// `DROP TABLE`, `LOCK TABLES`, `ALTER TABLE ... KEYS`.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// Only comments and blanks.
    Empty,
    /// Sets the session: every lane runs it. `fk`: whether it turns foreign key checks off
    /// (Some(true)) or may turn them on (Some(false)).
    Session { fk: Option<bool> },
    /// Touches one table only.
    Bound { table: Vec<u8>, kind: Kind },
    /// Anything else: the rest of the dump runs serially.
    Cut(String),
}

/// Classifies a statement from its start (`complete`: `stmt` is all of it). None: more bytes
/// are needed.
fn classify(stmt: &[u8], complete: bool) -> Option<Class> {
    let mut t = Tokens { s: stmt, i: 0 };
    if !t.skip_leading() {
        return if complete { Some(Class::Empty) } else { None };
    }
    // The first words of a statement fit in the prefix; a short prefix of an unfinished one
    // waits for more.
    if !complete && stmt.len() - t.i < 256 {
        return None;
    }
    let start = t.i;
    let cut = |what: &str| Some(Class::Cut(what.to_string()));
    let first = t.word();
    let class = match first.as_deref() {
        Some("SET") => {
            let upper: Vec<u8> = stmt[start..]
                .iter()
                .filter(|b| !b.is_ascii_whitespace())
                .map(u8::to_ascii_uppercase)
                .collect();
            let has = |w: &[u8]| upper.windows(w.len()).any(|x| x == w);
            if !complete {
                cut("a long SET statement")
            } else if has(b"GLOBAL") {
                cut("a SET GLOBAL statement")
            } else if has(b"ANSI") || has(b"NO_BACKSLASH_ESCAPES") {
                cut("an sql_mode that changes how text is quoted")
            } else {
                let fk = if has(b"FOREIGN_KEY_CHECKS=0") {
                    Some(true)
                } else if has(b"FOREIGN_KEY_CHECKS") {
                    Some(false)
                } else {
                    None
                };
                Some(Class::Session { fk })
            }
        }
        Some("COMMIT") if t.at_end() => Some(Class::Session { fk: None }),
        Some("UNLOCK") if t.word().as_deref() == Some("TABLES") && t.at_end() => {
            Some(Class::Session { fk: None })
        }
        Some("DROP") if t.word().as_deref() == Some("TABLE") => {
            let mut name = t.name();
            if name.as_deref() == Some(b"IF".as_slice()) {
                name = (t.word().as_deref() == Some("EXISTS"))
                    .then(|| t.name())
                    .flatten();
            }
            match name {
                Some(table) if t.at_end() => Some(Class::Bound {
                    table,
                    kind: Kind::Other,
                }),
                _ => cut("a DROP TABLE of other than one table"),
            }
        }
        Some("CREATE") if t.word().as_deref() == Some("TABLE") => {
            let mut name = t.name();
            if name.as_deref() == Some(b"IF".as_slice()) {
                name = (t.word().as_deref() == Some("NOT")
                    && t.word().as_deref() == Some("EXISTS"))
                .then(|| t.name())
                .flatten();
            }
            match name {
                Some(table) if t.punct(b'(') => Some(Class::Bound {
                    table,
                    kind: Kind::Create,
                }),
                _ => cut("a CREATE TABLE not followed by its columns"),
            }
        }
        Some("LOCK") if t.word().as_deref() == Some("TABLES") => {
            let name = t.name();
            let kind = t.word();
            match (name, kind.as_deref()) {
                (Some(table), Some("WRITE" | "READ")) if t.at_end() => Some(Class::Bound {
                    table,
                    kind: Kind::Other,
                }),
                _ => cut("a LOCK TABLES of other than one table"),
            }
        }
        Some("ALTER") if t.word().as_deref() == Some("TABLE") => {
            let name = t.name();
            let what = (t.word(), t.word());
            match (name, what.0.as_deref(), what.1.as_deref()) {
                (Some(table), Some("DISABLE" | "ENABLE"), Some("KEYS")) if t.at_end() => {
                    Some(Class::Bound {
                        table,
                        kind: Kind::Other,
                    })
                }
                _ => cut("an ALTER TABLE"),
            }
        }
        Some("INSERT") if t.word().as_deref() == Some("INTO") => {
            let name = t.name();
            let columns_ok = !t.peek(b'(') || t.columns();
            match name {
                Some(table) if columns_ok && t.word().as_deref() == Some("VALUES") => {
                    Some(Class::Bound {
                        table,
                        kind: Kind::Insert,
                    })
                }
                _ => cut("an INSERT other than INSERT INTO ... VALUES"),
            }
        }
        Some(w) => cut(&format!("a {w} statement")),
        None => cut("a statement that does not start with a word"),
    };
    class
}

/// Where the rows of `INSERT INTO t VALUES ...` start; None with a column list.
fn values_start(stmt: &[u8]) -> Option<usize> {
    let mut t = Tokens { s: stmt, i: 0 };
    (t.skip_leading()
        && t.word().as_deref() == Some("INSERT")
        && t.word().as_deref() == Some("INTO")
        && t.name().is_some()
        && !t.peek(b'(')
        && t.word().as_deref() == Some("VALUES"))
    .then_some(t.i)
}

/// A tiny lexer over a statement's first bytes.
struct Tokens<'a> {
    s: &'a [u8],
    i: usize,
}

impl Tokens<'_> {
    /// Skips blanks, comments and the opening of executable comments (`/*!40101`,
    /// `/*M!100101`); false if nothing else is there.
    fn skip_leading(&mut self) -> bool {
        loop {
            self.blanks();
            let rest = &self.s[self.i..];
            let executable = rest.starts_with(b"/*!") || rest.starts_with(b"/*M!");
            let marker = if rest.get(2) == Some(&b'M') { 4 } else { 3 };
            let digits = rest
                .iter()
                .skip(marker)
                .take_while(|b| b.is_ascii_digit())
                .count();
            // No server reaches version 900000: MariaDB marks what only its client reads
            // (`/*M!999999\- enable the sandbox mode */`) that way.
            let never = std::str::from_utf8(&rest[marker.min(rest.len())..][..digits])
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .is_some_and(|v| v >= 900_000);
            if executable && !never {
                self.i += marker + digits;
            } else if rest.starts_with(b"/*") {
                match rest[2..].windows(2).position(|w| w == b"*/") {
                    Some(at) => self.i += 2 + at + 2,
                    None => return false,
                }
            } else if rest.starts_with(b"#")
                || (rest.starts_with(b"--") && rest.get(2).is_none_or(|&b| b <= b' '))
            {
                match memchr::memchr(b'\n', rest) {
                    Some(at) => self.i += at + 1,
                    None => return false,
                }
            } else {
                return !rest.is_empty();
            }
        }
    }

    fn blanks(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// A keyword, upper-cased.
    fn word(&mut self) -> Option<String> {
        self.blanks();
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_alphabetic)
            || self.s.get(self.i) == Some(&b'_')
        {
            self.i += 1;
        }
        (self.i > start)
            .then(|| String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_uppercase())
    }

    /// A table name, quoted (`` `a``b` ``) or bare; a qualified name (`db`.`t`) is refused.
    fn name(&mut self) -> Option<Vec<u8>> {
        self.blanks();
        let name = if self.s.get(self.i) == Some(&b'`') {
            let mut out = Vec::new();
            self.i += 1;
            loop {
                match self.s.get(self.i)? {
                    b'`' if self.s.get(self.i + 1) == Some(&b'`') => {
                        out.push(b'`');
                        self.i += 2;
                    }
                    b'`' => {
                        self.i += 1;
                        break;
                    }
                    &b => {
                        out.push(b);
                        self.i += 1;
                    }
                }
            }
            out
        } else {
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
            {
                self.i += 1;
            }
            self.s[start..self.i].to_vec()
        };
        (!name.is_empty() && self.s.get(self.i) != Some(&b'.')).then_some(name)
    }

    fn peek(&mut self, p: u8) -> bool {
        self.blanks();
        self.s.get(self.i) == Some(&p)
    }

    fn punct(&mut self, p: u8) -> bool {
        let ok = self.peek(p);
        if ok {
            self.i += 1;
        }
        ok
    }

    /// A column list `(a, `b`)`.
    fn columns(&mut self) -> bool {
        if !self.punct(b'(') {
            return false;
        }
        loop {
            if self.name().is_none() {
                return false;
            }
            if self.punct(b')') {
                return true;
            }
            if !self.punct(b',') {
                return false;
            }
        }
    }

    /// Only the end of the statement is left: `;`, perhaps after the `*/` of an executable
    /// comment.
    fn at_end(&mut self) -> bool {
        self.blanks();
        if self.s[self.i..].starts_with(b"*/") {
            self.i += 2;
            self.blanks();
        }
        self.s.get(self.i) == Some(&b';')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `dump` through `lanes` writers, each fed in pieces of `piece` bytes, one after
    /// the other (lane 0 last, as it waits for the others at a cut); returns what each lane
    /// was given and its report.
    fn run(dump: &[u8], lanes: usize, piece: usize) -> Vec<(String, LaneReport)> {
        run_as(dump, lanes, piece, false)
    }

    /// `interleave`: the lanes take turns, a piece each (for dumps without a cut, where lane 0
    /// would wait for the others).
    fn run_as(
        dump: &[u8],
        lanes: usize,
        piece: usize,
        interleave: bool,
    ) -> Vec<(String, LaneReport)> {
        if interleave {
            let plan = Plan::new(lanes);
            let cancel = Arc::new(AtomicBool::new(false));
            let mut writers: Vec<_> = (0..lanes)
                .map(|l| LaneWriter::new(Vec::new(), l, plan.clone(), cancel.clone()))
                .collect();
            for chunk in dump.chunks(piece) {
                for w in writers.iter_mut().rev() {
                    w.write_all(chunk).unwrap();
                }
            }
            return writers
                .into_iter()
                .map(|w| {
                    let (bytes, report) = w.finish().unwrap();
                    (String::from_utf8(bytes).unwrap(), report)
                })
                .collect();
        }
        let plan = Plan::new(lanes);
        let cancel = Arc::new(AtomicBool::new(false));
        let mut out = vec![(String::new(), LaneReport::default()); lanes];
        for lane in (0..lanes).rev() {
            let mut w = LaneWriter::new(Vec::new(), lane, plan.clone(), cancel.clone());
            let mut result = Ok(());
            for chunk in dump.chunks(piece) {
                result = w.write_all(chunk);
                if result.is_err() {
                    break;
                }
            }
            match result {
                Ok(()) => {}
                Err(e) => {
                    assert!(w.stopped(), "lane {lane}: {e}");
                    assert_eq!(e.to_string(), STOPPED);
                }
            }
            let stopped = w.stopped();
            let (bytes, report) = w.finish().unwrap();
            if lane > 0 {
                plan.lane_finished(Ok(()));
            }
            assert!(!stopped || lane > 0);
            out[lane] = (String::from_utf8(bytes).unwrap(), report);
        }
        out
    }

    const HEAD: &str = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n\
/*!40101 SET NAMES utf8mb4 */;\n\
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n";

    fn table(name: &str, rows: &[&str]) -> String {
        let mut s = format!(
            "\n--\n-- Table structure for table `{name}`\n--\n\n\
DROP TABLE IF EXISTS `{name}`;\n\
/*!40101 SET @saved_cs_client     = @@character_set_client */;\n\
CREATE TABLE `{name}` (\n  `id` int(11) NOT NULL,\n  `v` text,\n  PRIMARY KEY (`id`)\n\
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n\
/*!40101 SET character_set_client = @saved_cs_client */;\n\
SET @OLD_AUTOCOMMIT=@@AUTOCOMMIT, @@AUTOCOMMIT=0;\n\
LOCK TABLES `{name}` WRITE;\n\
/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;\n"
        );
        for r in rows {
            s.push_str(&format!("INSERT INTO `{name}` VALUES\n{r};\n"));
        }
        s.push_str(&format!(
            "/*!40000 ALTER TABLE `{name}` ENABLE KEYS */;\nUNLOCK TABLES;\nCOMMIT;\n\
SET AUTOCOMMIT=@OLD_AUTOCOMMIT;\n"
        ));
        s
    }

    const TAIL: &str =
        "/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n\n-- Dump completed\n";

    fn statements(s: &str) -> Vec<String> {
        let mut scan = Scanner::default();
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            let (n, ended) = scan.feed(rest);
            if ended {
                out.push(String::from_utf8_lossy(&rest[..n]).trim().to_string());
            }
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn statements_end_where_the_client_ends_them() {
        let sql = "INSERT INTO t VALUES ('a;b', \"c;\\\"d\", 'it''s', 'back\\\\');\n\
-- a comment; not a statement\n# another; one\nSELECT 1 /* x; y */, `a;b`;\n\
/*!40101 SET a=1 */;\nSELECT 2--3;\nSELECT '--';";
        assert_eq!(
            statements(sql),
            vec![
                "INSERT INTO t VALUES ('a;b', \"c;\\\"d\", 'it''s', 'back\\\\');",
                "-- a comment; not a statement\n# another; one\nSELECT 1 /* x; y */, `a;b`;",
                "/*!40101 SET a=1 */;",
                "SELECT 2--3;",
                "SELECT '--';",
            ]
        );
    }

    #[test]
    fn statements_are_classified_by_what_they_touch() {
        let bound = |t: &str, kind| {
            Some(Class::Bound {
                table: t.as_bytes().to_vec(),
                kind,
            })
        };
        let c = |s: &str| classify(s.as_bytes(), true);
        assert_eq!(c("-- x\n\n"), Some(Class::Empty));
        assert_eq!(
            c("/*!40101 SET NAMES utf8mb4 */;"),
            Some(Class::Session { fk: None })
        );
        assert_eq!(
            c("/*!40014 SET @OLD=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;"),
            Some(Class::Session { fk: Some(true) })
        );
        assert_eq!(
            c("SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS;"),
            Some(Class::Session { fk: Some(false) })
        );
        assert_eq!(c("COMMIT;"), Some(Class::Session { fk: None }));
        assert_eq!(c("UNLOCK TABLES;"), Some(Class::Session { fk: None }));
        assert_eq!(c("DROP TABLE IF EXISTS `a``b`;"), bound("a`b", Kind::Other));
        assert_eq!(
            c("CREATE TABLE `t` (\n `id` int);"),
            bound("t", Kind::Create)
        );
        assert_eq!(
            c("CREATE TABLE IF NOT EXISTS t (id int);"),
            bound("t", Kind::Create)
        );
        assert_eq!(c("LOCK TABLES `t` WRITE;"), bound("t", Kind::Other));
        assert_eq!(
            c("/*!40000 ALTER TABLE `t` DISABLE KEYS */;"),
            bound("t", Kind::Other)
        );
        assert_eq!(
            c("INSERT INTO `t` VALUES (1,'a');"),
            bound("t", Kind::Insert)
        );
        assert_eq!(
            c("INSERT INTO `t` (`id`, v) VALUES (1,'a');"),
            bound("t", Kind::Insert)
        );
        assert_eq!(values_start(b"INSERT INTO `t` VALUES (1);"), Some(22));
        assert_eq!(values_start(b"INSERT INTO t (a) VALUES (1);"), None);
        for cut in [
            "SET GLOBAL x=1;",
            "/*!40101 SET SQL_MODE='NO_BACKSLASH_ESCAPES' */;",
            "SET sql_mode='ANSI_QUOTES';",
            "DELIMITER ;;",
            "DROP TABLE `a`, `b`;",
            "CREATE TABLE `t` LIKE `u`;",
            "CREATE TABLE `db`.`t` (id int);",
            "LOCK TABLES `a` WRITE, `b` WRITE;",
            "ALTER TABLE `t` ADD KEY (id);",
            "INSERT INTO `t` SELECT * FROM u;",
            "REPLACE INTO `t` VALUES (1);",
            "/*!50001 CREATE VIEW v AS SELECT 1 */;",
            "USE `other`;",
            "(SELECT 1);",
        ] {
            assert!(matches!(c(cut), Some(Class::Cut(_))), "{cut}");
        }
        // An unfinished statement waits for its first words.
        assert_eq!(classify(b"-- only a comment\n", false), None);
        assert_eq!(classify(b"INSERT INTO `t` VAL", false), None);
    }

    #[test]
    fn tables_are_shared_out_and_sessions_kept_alike() {
        let dump = format!(
            "{HEAD}{}{}{}{TAIL}",
            table("a", &["(1,'x;y')", "(2,'z')"]),
            table("b", &["(1,'q')"]),
            table("c", &["(7,'c')"])
        );
        for (piece, interleave) in [(1, true), (7, true), (64, true), (1 << 20, false)] {
            let lanes = run_as(dump.as_bytes(), 2, piece, interleave);
            // Each table's rows went to exactly one lane.
            for (t, row) in [("a", "(1,'x;y')"), ("b", "(1,'q')"), ("c", "(7,'c')")] {
                let holders: Vec<usize> = (0..2).filter(|&l| lanes[l].0.contains(row)).collect();
                assert_eq!(holders.len(), 1, "table {t}, piece {piece}: {holders:?}");
                let l = holders[0];
                assert!(lanes[l].0.contains(&format!("CREATE TABLE `{t}`")));
                assert!(!lanes[1 - l].0.contains(&format!("CREATE TABLE `{t}`")));
                assert!(lanes[l].1.paused.contains(&t.to_string()));
            }
            // Both sessions saw every SET, in the dump's order.
            for (text, _) in &lanes {
                assert_eq!(text.matches("SET NAMES utf8mb4").count(), 1);
                assert_eq!(text.matches("SET AUTOCOMMIT=@OLD_AUTOCOMMIT").count(), 3);
                assert!(text.trim_end().ends_with("-- Dump completed"));
                assert!(text.starts_with("/*M!999999"));
            }
            assert_eq!(lanes[0].1.sections + lanes[1].1.sections, 3);
            assert_eq!(lanes[0].1.cut, None);
            if interleave {
                assert!(lanes.iter().all(|l| l.1.sections > 0), "piece {piece}");
            }
        }
    }

    #[test]
    fn one_lane_passes_the_whole_dump_on() {
        let dump = format!(
            "{HEAD}{}{}{TAIL}",
            table("a", &["(1,'x')"]),
            table("b", &["(2,'y')"])
        );
        let lanes = run(dump.as_bytes(), 1, 5);
        let expected = dump.replace(
            "COLLATE=utf8mb4_unicode_ci;",
            "COLLATE=utf8mb4_unicode_ci STATS_AUTO_RECALC=0;",
        );
        assert_eq!(lanes[0].0, expected);
        assert_eq!(lanes[0].1.paused, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn after_a_cut_the_first_lane_runs_the_rest_as_it_is() {
        let trigger = "DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER t1 BEFORE INSERT ON a FOR EACH ROW SET NEW.v = 'x;' */;;\nDELIMITER ;\n";
        let dump = format!(
            "{HEAD}{}{trigger}{}{TAIL}",
            table("a", &["(1,'x')"]),
            table("b", &["(2,'y')"])
        );
        for piece in [3, 1 << 20] {
            let lanes = run(dump.as_bytes(), 2, piece);
            let cut_at = dump.find("DELIMITER ;;").unwrap();
            // Lane 0 ran everything from the cut on, byte for byte (table b included, its
            // statistics not paused), and lane 1 nothing of it.
            assert!(lanes[0].0.ends_with(&dump[cut_at..]), "piece {piece}");
            assert!(!lanes[1].0.contains("DELIMITER"));
            assert!(!lanes[1].0.contains("(2,'y')"));
            assert!(lanes[0].1.cut.as_deref().unwrap().contains("DELIMITER"));
            assert!(!lanes.iter().any(|l| l.1.paused.contains(&"b".to_string())));
            // Table a was loaded once, by one of them.
            assert_eq!(
                lanes[0].0.matches("(1,'x')").count() + lanes[1].0.matches("(1,'x')").count(),
                1
            );
        }
    }

    #[test]
    fn without_foreign_key_checks_off_everything_is_serial() {
        let dump = format!(
            "/*!40101 SET NAMES utf8mb4 */;\n{}{}",
            table("a", &["(1,'x')"]),
            table("b", &["(2,'y')"])
        );
        let lanes = run(dump.as_bytes(), 2, 1 << 20);
        assert_eq!(lanes[0].0, dump);
        assert!(lanes[0].1.cut.as_deref().unwrap().contains("foreign key"));
        assert_eq!(lanes[1].0, "/*!40101 SET NAMES utf8mb4 */;");
    }

    #[test]
    fn a_table_seen_again_is_a_cut() {
        let dump = format!(
            "{HEAD}{}{}INSERT INTO `a` VALUES (3,'again');\n{TAIL}",
            table("a", &["(1,'x')"]),
            table("b", &["(2,'y')"])
        );
        let lanes = run(dump.as_bytes(), 2, 1 << 20);
        assert!(lanes[0]
            .0
            .ends_with(&format!("INSERT INTO `a` VALUES (3,'again');\n{TAIL}")));
        assert!(lanes[0]
            .1
            .cut
            .as_deref()
            .unwrap()
            .contains("`a` comes back"));
    }

    #[test]
    fn statistics_are_paused_only_where_the_options_end_plainly() {
        let p = |s: &str| pause_stats(s.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            p("CREATE TABLE t (id int) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;").as_deref(),
            Some("CREATE TABLE t (id int) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 STATS_AUTO_RECALC=0;")
        );
        assert_eq!(
            p("CREATE TABLE t (id int) ENGINE=InnoDB COMMENT='a (b)';").as_deref(),
            None,
            "the last ) is inside the comment: nothing is known of the options"
        );
        assert_eq!(
            p("CREATE TABLE t (id int) ENGINE=InnoDB COMMENT='plain';").as_deref(),
            Some("CREATE TABLE t (id int) ENGINE=InnoDB COMMENT='plain' STATS_AUTO_RECALC=0;")
        );
        for none in [
            "CREATE TABLE t (id int) ENGINE=MyISAM;",
            "CREATE TABLE t (id int) ENGINE=InnoDB STATS_AUTO_RECALC=1;",
            "CREATE TABLE t (id int) ENGINE=InnoDB STATS_PERSISTENT=0;",
            "CREATE TABLE t (id int) ENGINE=InnoDB\n/*!50100 PARTITION BY HASH (id) PARTITIONS 2 */;",
            "CREATE TABLE t (id int) ENGINE=InnoDB WITH SYSTEM VERSIONING;",
            "/*!50001 CREATE TABLE `v` (`a` int) ENGINE=InnoDB */;",
        ] {
            assert_eq!(p(none), None, "{none}");
        }
    }

    /// A stand-in for a lane's connection (the e2e restore test runs the real one): answers
    /// every mark with `session`, and keeps what each second client was given.
    struct FakeLoads {
        session: Vec<String>,
        asked: Arc<Mutex<Vec<String>>>,
        started: Arc<Mutex<Vec<Started>>>,
    }

    /// A second client's SQL, and the text it was fed.
    type Started = (String, Arc<Mutex<Vec<u8>>>);

    struct FakeLoader(Arc<Mutex<Vec<u8>>>);

    impl Write for FakeLoader {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Loader for FakeLoader {
        fn finish(self: Box<Self>) -> io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(b"<end>");
            Ok(())
        }
    }

    impl Loads for FakeLoads {
        fn answer(&mut self, mark: &str) -> io::Result<Vec<String>> {
            self.asked.lock().unwrap().push(mark.to_string());
            Ok(self.session.clone())
        }
        fn start(&mut self, _table: &[u8], sql: &str) -> io::Result<Box<dyn Loader>> {
            let text = Arc::new(Mutex::new(Vec::new()));
            self.started
                .lock()
                .unwrap()
                .push((sql.to_string(), text.clone()));
            Ok(Box::new(FakeLoader(text)))
        }
    }

    #[test]
    fn large_plain_tables_load_as_text_through_a_second_client() {
        let many: Vec<String> = (0..3000)
            .map(|i| format!("({i},'row {i}: tab\\t; it\\'s')"))
            .collect();
        let big = many.join(",");
        assert!(big.len() > TEXT_MIN);
        let dump = format!(
            "{HEAD}{}{}{TAIL}",
            table("big", &[&big, "(7000,NULL),(7001,'last')"]),
            table("small", &["(1,'a')"])
        );
        let mut want = String::new();
        for i in 0..3000 {
            want.push_str(&format!("{i}\trow {i}: tab\\t; it's\n"));
        }
        want.push_str("7000\t\\N\n7001\tlast\n<end>");
        for (local, piece) in [("1", 7), ("1", 4096), ("0", 4096)] {
            let session: Vec<String> = [
                "NO_AUTO_VALUE_ON_ZERO",
                "+00:00",
                "0",
                "0",
                "utf8mb4",
                local,
            ]
            .map(String::from)
            .to_vec();
            let loads = FakeLoads {
                session,
                asked: Arc::default(),
                started: Arc::default(),
            };
            let (asked, started) = (loads.asked.clone(), loads.started.clone());
            let mut w = LaneWriter::new(
                Vec::new(),
                0,
                Plan::new(1),
                Arc::new(AtomicBool::new(false)),
            )
            .with_loads(Box::new(loads));
            for chunk in dump.as_bytes().chunks(piece) {
                w.write_all(chunk).unwrap();
            }
            let (out, report) = w.finish().unwrap();
            let out = String::from_utf8(out).unwrap();
            // One question, for the big table only; a refusal stops the questions.
            assert_eq!(*asked.lock().unwrap(), vec!["aegir-rows-1".to_string()]);
            assert!(
                out.contains("SELECT 'aegir-rows-1', @@SESSION.sql_mode"),
                "{out}"
            );
            assert!(
                out.contains("INSERT INTO `small` VALUES\n(1,'a');"),
                "{out}"
            );
            assert!(out.contains("LOCK TABLES `small` WRITE;"), "{out}");
            assert!(out.contains("ALTER TABLE `big` ENABLE KEYS"), "{out}");
            let started = started.lock().unwrap();
            if local == "1" {
                assert_eq!(report.as_text, vec!["big".to_string()]);
                assert_eq!(started.len(), 1);
                assert!(started[0]
                    .0
                    .contains("INTO TABLE `big` CHARACTER SET binary"));
                assert_eq!(String::from_utf8_lossy(&started[0].1.lock().unwrap()), want);
                // Its lock would shut the second client out; its rows went there.
                assert!(!out.contains("LOCK TABLES `big`"), "{out}");
                assert!(!out.contains("INSERT INTO `big`"), "{out}");
                // The mark comes after the table exists, the rest after the rows are in.
                let mark = out.find("aegir-rows-1").unwrap();
                assert!(out.find("CREATE TABLE `big`").unwrap() < mark);
            } else {
                assert!(report.as_text.is_empty());
                assert!(started.is_empty());
                assert!(out.contains("LOCK TABLES `big` WRITE;"), "{out}");
                assert!(
                    out.contains(&format!("INSERT INTO `big` VALUES\n{big};")),
                    "{out}"
                );
            }
            assert_eq!(report.sections, 2);
        }
    }

    #[test]
    fn stats_are_set_back_and_analyzed() {
        assert_eq!(
            restore_stats_sql("s__new", &["a".into(), "b`c".into()]),
            "ALTER TABLE `s__new`.`a` STATS_AUTO_RECALC=DEFAULT;\n\
ALTER TABLE `s__new`.`b``c` STATS_AUTO_RECALC=DEFAULT;\n\
ANALYZE TABLE `s__new`.`a`, `s__new`.`b``c`;\n"
        );
        assert_eq!(restore_stats_sql("s", &[]), "");
    }
}
