//! The backup archive format: writer, verifying reader and safe extraction (Aegir 3 tarballs too).
//!
//! Format version 1 is a zstd stream holding a tar stream: `header.json`, the SQL dump as
//! `database/NNNNNN.sql` chunks, the `files/` and `private/` trees, and `manifest.json` last.
//!
//! The reader is the security boundary: archives come from disk, from other hosts and, for
//! Aegir 3 imports, from users. Nothing reaches a [`Sink`] before it has been checked, and
//! [`TarSink`] re-emits a fresh tar stream built only from checked entries,
//! so the host's `tar -x` never sees a name, link or mode that this module did not produce.
//! The writer applies the same checks to its input and skips (and lists) what the reader
//! would refuse, so one odd upload never makes every backup of a site fail.
//!
//! What this module deliberately does not know: where archives live, how the dump and the
//! trees are produced on the host, or what a restore does with the staging directory.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tar::EntryType;

/// The `format` field of header.json and manifest.json.
pub const FORMAT_NAME: &str = "aegir-backup";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_MEMBER: &str = "header.json";
const MANIFEST_MEMBER: &str = "manifest.json";
const DATABASE_PREFIX: &str = "database/";
/// What an Aegir 3 site directory holds beside its code: restored as our trees, or rebuilt.
const AEGIR3_NOT_CODE: [&str; 6] = [
    "files",
    "private",
    "settings.php",
    "drushrc.php",
    "database.sql",
    ".aegir-env",
];
/// What aegird itself writes in the application's site directory: site/ may not carry it,
/// or a restore would replace the site's settings (and so its database) with the archive's.
pub const SITE_RESERVED: [&str; 5] = [
    "settings.php",
    "drushrc.php",
    "files",
    "private",
    ".aegir-env",
];

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// header.json is a handful of fields; anything larger is not ours.
const MAX_HEADER_JSON: u64 = 1 << 20;
/// GNU long-name records are read into memory before their member; PATH_MAX is 4096, so
/// this is generous while keeping a hostile record from exhausting memory.
const MAX_NAME_RECORD: u64 = 64 << 10;
/// Same reasoning for PAX extended headers.
const MAX_PAX_RECORD: u64 = 1 << 20;
const COPY_BUFFER: usize = 64 << 10;

/// Everything that can go wrong writing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{member}: {reason}")]
    Unsafe { member: String, reason: String },
    #[error("the archive is truncated or corrupt: {0}")]
    Corrupt(String),
    #[error("the archive expands beyond {limit} bytes; refusing it as a decompression bomb")]
    TooLarge { limit: u64 },
    #[error("{member}: checksum mismatch (the archive is damaged)")]
    Checksum { member: String },
    #[error("not an aegir backup or an Aegir 3 tarball: {0}")]
    NotABackup(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// A call out of order is a bug in the caller, reported as an I/O error of kind InvalidInput
/// so the error enum stays about archives.
fn misuse(what: &str) -> ArchiveError {
    ArchiveError::Io {
        context: "archive writer".to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, what.to_string()),
    }
}

/// What a backup is of; written first (header.json) and again in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub environment_id: i64,
    pub uri: String,
    pub release: String,
    /// "wordpress", "drupal8", ...
    pub app: String,
    pub app_version: Option<String>,
    /// "mariadb" / "mysql"
    pub db_engine: String,
    pub db_version: String,
    /// RFC 3339 UTC, supplied by the caller so tests control time.
    pub created: String,
}

/// header.json: the format marker lets a reader reject a foreign tarball before reading on.
#[derive(Debug, Serialize, Deserialize)]
struct HeaderDoc {
    format: String,
    version: u32,
    #[serde(flatten)]
    header: Header,
}

/// manifest.json, the last member: what the archive must contain, checked while reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    #[serde(flatten)]
    pub header: Header,
    /// Every member except header.json and manifest.json, in archive order.
    pub members: Vec<ManifestMember>,
    pub database: DatabaseSummary,
    /// Entries of the site's trees the writer would not archive, with the reason.
    pub skipped: Vec<SkippedEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMember {
    pub path: String,
    pub kind: MemberKind,
    pub size: u64,
    /// Hex sha256 of the content; regular files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink or hard link target; links only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSummary {
    pub chunks: u64,
    pub size: u64,
    /// Hex sha256 of the whole dump, so a reordered or dropped chunk is caught too.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    pub path: String,
    pub reason: String,
}

/// `<dest>.partial`: where a Writer writes until `finish`, so a crash never leaves a file at
/// `dest` that looks complete. Callers remove it after a crash.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    dest.with_file_name(name)
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// zstd level (`backups.level`).
    pub level: i32,
    /// zstd worker threads; 1 compresses on the calling thread.
    pub threads: u32,
    /// Bytes per database chunk. Each chunk is buffered in memory because a tar header needs
    /// the size before the data, and that lets the dump be streamed once with no temp file.
    pub chunk_size: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: crate::config::DEFAULT_LEVEL,
            threads: std::thread::available_parallelism()
                .map(|n| u32::try_from(n.get()).unwrap_or(1))
                .unwrap_or(1),
            chunk_size: 32 << 20,
        }
    }
}

/// The archive as finished on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    /// Bytes on disk.
    pub size: u64,
    /// Hex sha256 of the file's bytes, hashed while writing so the file is not read back.
    pub sha256: String,
    pub manifest: Manifest,
}

/// Counts and hashes the compressed bytes on their way to the file.
struct HashingWriter {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

type Compressor = zstd::stream::write::Encoder<'static, HashingWriter>;

/// The highest zstd level the dump is compressed at, whatever the files' level: measured on a
/// 1 GB WordPress-shaped dump, level 3 makes it 0.2 % larger than level 7 at a quarter of
/// the CPU time (3.0 s against 10.8 s on 2 cores, 2026-12-07).
const SQL_LEVEL: i32 = 3;

/// Writes one archive. Call `add_database` once, then `add_tree` (any number of times), then
/// `finish`. Dropping it unfinished removes the `.partial` file.
pub struct Writer {
    dest: PathBuf,
    partial: PathBuf,
    /// None only while being torn down.
    builder: Option<tar::Builder<Compressor>>,
    header: Header,
    chunk_size: usize,
    members: Vec<ManifestMember>,
    skipped: Vec<SkippedEntry>,
    database: Option<DatabaseSummary>,
    checker: Checker,
    /// The level for the files, and whether the level may change between members (zstd
    /// allows it only with workers).
    level: i32,
    multithreaded: bool,
    tree_started: bool,
    /// Set when a step failed half-way: the tar stream may end inside a member, so `finish`
    /// must not turn it into an archive that looks complete.
    failed: bool,
    finished: bool,
}

impl Writer {
    /// Creates `<dest>.partial` exclusively (mode 0600) beside `dest`.
    pub fn create(dest: &Path, header: Header, opts: WriteOptions) -> Result<Writer, ArchiveError> {
        let partial = partial_path(dest);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io_error(format!("creating {}", partial.display())))?;
        // From here on the Writer owns the file, so an error below removes it on drop.
        let mut writer = Writer {
            dest: dest.to_path_buf(),
            partial,
            builder: None,
            header,
            chunk_size: opts.chunk_size.max(1),
            members: Vec::new(),
            skipped: Vec::new(),
            database: None,
            checker: Checker::new(true),
            level: opts.level,
            multithreaded: opts.threads > 1,
            tree_started: false,
            failed: false,
            finished: false,
        };
        let context = format!("starting zstd for {}", writer.partial.display());
        let sink = HashingWriter {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut encoder = Compressor::new(sink, opts.level).map_err(io_error(&context))?;
        encoder.include_checksum(true).map_err(io_error(&context))?;
        if opts.threads > 1 {
            encoder
                .multithread(opts.threads)
                .map_err(io_error(&context))?;
        }
        writer.builder = Some(tar::Builder::new(encoder));

        let doc = HeaderDoc {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            header: writer.header.clone(),
        };
        let json = serde_json::to_vec_pretty(&doc).map_err(|e| ArchiveError::Io {
            context: "encoding header.json".to_string(),
            source: io::Error::other(e),
        })?;
        writer.append_bytes(HEADER_MEMBER, &json)?;
        Ok(writer)
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<Compressor>, ArchiveError> {
        self.builder
            .as_mut()
            .ok_or_else(|| misuse("the writer is already torn down"))
    }

    fn write_context(&self) -> String {
        format!("writing {}", self.partial.display())
    }

    fn append_bytes(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let context = self.write_context();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        self.builder()?
            .append_data(&mut header, path, data)
            .map_err(io_error(context))
    }

    /// The SQL dump, read to its end (call once, before add_tree). Returns its size.
    pub fn add_database(&mut self, dump: &mut dyn Read) -> Result<u64, ArchiveError> {
        if self.failed || self.database.is_some() || self.tree_started {
            return Err(misuse("add_database must be called once, before add_tree"));
        }
        let result = self.write_database(dump);
        self.failed = result.is_err();
        result
    }

    /// The zstd level from the next member on (with workers only: zstd takes a new level
    /// within a frame at its next job, which the flush starts).
    fn set_level(&mut self, level: i32) -> Result<(), ArchiveError> {
        let context = self.write_context();
        let encoder = self.builder()?.get_mut();
        encoder.flush().map_err(io_error(&context))?;
        encoder
            .set_parameter(zstd::stream::raw::CParameter::CompressionLevel(level))
            .map_err(io_error(context))
    }

    fn write_database(&mut self, dump: &mut dyn Read) -> Result<u64, ArchiveError> {
        // Only a level above the dump's needs switching (each switch ends a zstd job early).
        let switch = self.multithreaded && self.level > SQL_LEVEL;
        if switch {
            self.set_level(SQL_LEVEL)?;
        }
        let chunk_size = self.chunk_size as u64;
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        let mut chunks = 0u64;
        let mut total = 0u64;
        loop {
            buf.clear();
            Read::take(&mut *dump, chunk_size)
                .read_to_end(&mut buf)
                .map_err(io_error("reading the database dump"))?;
            // An empty dump still gets one (empty) chunk: readers treat "no chunk" as "no dump".
            if buf.is_empty() && chunks > 0 {
                break;
            }
            hasher.update(&buf);
            total += buf.len() as u64;
            let name = format!("{DATABASE_PREFIX}{chunks:06}.sql");
            self.append_bytes(&name, &buf)?;
            self.members.push(ManifestMember {
                path: name,
                kind: MemberKind::File,
                size: buf.len() as u64,
                sha256: Some(crate::hex::encode(&Sha256::digest(&buf))),
                target: None,
            });
            chunks += 1;
            if (buf.len() as u64) < chunk_size {
                break;
            }
        }
        self.database = Some(DatabaseSummary {
            chunks,
            size: total,
            sha256: crate::hex::encode(&hasher.finalize()),
        });
        if switch {
            self.set_level(self.level)?;
        }
        Ok(total)
    }

    /// Re-emits a tar stream's entries (only `files/**` and `private/**`; `./` prefixes
    /// stripped), hashing each regular file. Entries the reader would refuse (absolute, `..`,
    /// links out of the tree, devices, FIFOs, sockets, setuid/setgid files, anything outside
    /// files/ and private/) are NOT archived but listed in manifest.skipped with the reason.
    /// Special mode bits are dropped (mode & 0o777) on what is kept.
    pub fn add_tree(&mut self, tar_stream: &mut dyn Read) -> Result<(), ArchiveError> {
        if self.failed || self.database.is_none() {
            return Err(misuse("add_tree must follow a successful add_database"));
        }
        self.tree_started = true;
        let result = self.write_tree(tar_stream);
        self.failed = result.is_err();
        result
    }

    fn write_tree(&mut self, tar_stream: &mut dyn Read) -> Result<(), ArchiveError> {
        let input_context = "reading the site's tar stream";
        let budget = Budget::unlimited();
        let mut archive = tar::Archive::new(tar_stream);
        let mut entries = archive
            .entries()
            .map_err(io_error(input_context))?
            .raw(true);
        let mut parser = Parser::default();
        let on_error = |e: io::Error| ArchiveError::Io {
            context: input_context.to_string(),
            source: e,
        };
        while let Some((member, mut entry)) = parser.next(&mut entries, &budget, &on_error)? {
            let checked = match self.checker.check(&member) {
                Ok(Some(checked)) => checked.entry,
                Ok(None) => continue,
                Err(reason) => {
                    self.skipped.push(SkippedEntry {
                        path: member.display_name(),
                        reason,
                    });
                    continue;
                }
            };
            let record = self.emit(&checked, &mut entry)?;
            self.members.push(record);
        }
        Ok(())
    }

    fn emit(
        &mut self,
        entry: &SafeEntry,
        data: &mut dyn Read,
    ) -> Result<ManifestMember, ArchiveError> {
        let context = self.write_context();
        let builder = self.builder()?;
        let mut header = entry_header(entry);
        let mut record = ManifestMember {
            path: entry.path.clone(),
            kind: MemberKind::Dir,
            size: 0,
            sha256: None,
            target: None,
        };
        match &entry.kind {
            EntryKind::Dir => {
                builder
                    .append_data(&mut header, format!("{}/", entry.path), io::empty())
                    .map_err(io_error(context))?;
            }
            EntryKind::File { size } => {
                let mut reader = MemberReader::new(data, *size, true);
                let result = builder.append_data(&mut header, &entry.path, &mut reader);
                if let Some((kind, message)) = reader.fault.take() {
                    return Err(ArchiveError::Io {
                        context: format!("reading {} from the site's tar stream", entry.path),
                        source: io::Error::new(kind, message),
                    });
                }
                result.map_err(io_error(context))?;
                record.kind = MemberKind::File;
                record.size = *size;
                record.sha256 = reader.hasher.map(|h| crate::hex::encode(&h.finalize()));
            }
            EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
                builder
                    .append_link(&mut header, &entry.path, target)
                    .map_err(io_error(context))?;
                record.kind = if matches!(entry.kind, EntryKind::Symlink { .. }) {
                    MemberKind::Symlink
                } else {
                    MemberKind::Hardlink
                };
                record.target = Some(target.clone());
            }
        }
        Ok(record)
    }

    /// Writes manifest.json, finishes zstd, fsyncs the file, renames `.partial` to `dest`,
    /// fsyncs the directory.
    pub fn finish(mut self) -> Result<Written, ArchiveError> {
        if self.failed {
            return Err(misuse("an earlier step failed; the archive is incomplete"));
        }
        let database = self
            .database
            .clone()
            .ok_or_else(|| misuse("finish called before add_database"))?;
        let manifest = Manifest {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            header: self.header.clone(),
            members: std::mem::take(&mut self.members),
            database,
            skipped: std::mem::take(&mut self.skipped),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ArchiveError::Io {
            context: "encoding manifest.json".to_string(),
            source: io::Error::other(e),
        })?;
        self.append_bytes(MANIFEST_MEMBER, &json)?;

        let context = self.write_context();
        let builder = self
            .builder
            .take()
            .ok_or_else(|| misuse("the writer is already torn down"))?;
        let encoder = builder.into_inner().map_err(io_error(&context))?;
        let mut sink = encoder.finish().map_err(io_error(&context))?;
        sink.flush().map_err(io_error(&context))?;
        sink.file.sync_all().map_err(io_error(&context))?;
        let size = sink.bytes;
        let sha256 = crate::hex::encode(&sink.hasher.finalize());
        drop(sink.file);

        fs::rename(&self.partial, &self.dest).map_err(io_error(format!(
            "renaming {} to {}",
            self.partial.display(),
            self.dest.display()
        )))?;
        self.finished = true;
        // The rename is only durable once the directory entry is on disk.
        let dir = match self.dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(format!("syncing {}", dir.display())))?;
        Ok(Written {
            path: self.dest.clone(),
            size,
            sha256,
            manifest,
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            // Close the file before unlinking it; errors are moot, the archive is abandoned.
            self.builder.take();
            let _ = fs::remove_file(&self.partial);
        }
    }
}

fn entry_header(entry: &SafeEntry) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode & 0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(entry.mtime);
    let (kind, size) = match entry.kind {
        EntryKind::Dir => (EntryType::Directory, 0),
        EntryKind::File { size } => (EntryType::Regular, size),
        EntryKind::Symlink { .. } => (EntryType::Symlink, 0),
        EntryKind::Hardlink { .. } => (EntryType::Link, 0),
    };
    header.set_entry_type(kind);
    header.set_size(size);
    header
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// This module's format; zstd magic 28 B5 2F FD.
    Aegir,
    /// Aegir 3's `<uri>-YYYYMMDD.HHMMSS.tar.gz`; gzip magic 1F 8B.
    Aegir3,
}

/// Bounds on what reading one archive may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes (tar headers, data and padding all count).
    pub max_bytes: u64,
    /// Members (extension records not counted).
    pub max_entries: u64,
}

impl Limits {
    /// Limits for an archive of `compressed_size` bytes on disk.
    ///
    /// Real backups are dominated by already-compressed uploads (JPEG, PDF, ZIP) and an SQL dump
    /// that compresses 5-20x, so 200x is far above any genuine archive, while a bomb of zeros
    /// expands by 1000x (gzip) to millions (zstd) and is cut off early. The 256 MiB floor keeps
    /// small archives of text-heavy sites readable. Five million members is well beyond the
    /// largest sites' file counts and bounds the memory the checker's path table can take.
    pub fn for_archive(compressed_size: u64) -> Limits {
        Limits {
            max_bytes: compressed_size.saturating_mul(200).max(256 << 20),
            max_entries: 5_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
    Hardlink { target: String },
}

/// An entry that passed every check: its path is normalized and relative ("files/a/b.jpg"),
/// its link target (if any) stays inside the trees, and its mode has no special bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeEntry {
    pub path: String,
    pub kind: EntryKind,
    /// mode & 0o777.
    pub mode: u32,
    /// Seconds since the epoch, as archived, so a restore keeps file dates.
    pub mtime: u64,
}

/// Where a read delivers what it checked.
pub trait Sink {
    /// SQL bytes, in order.
    fn database(&mut self, data: &[u8]) -> io::Result<()>;
    /// One checked entry; `data` yields a regular file's content (nothing for other kinds).
    /// Unread content is drained (and still verified) by the reader.
    fn entry(&mut self, entry: &SafeEntry, data: &mut dyn Read) -> io::Result<()>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub format: Format,
    /// None for Aegir 3.
    pub manifest: Option<Manifest>,
    /// Hex sha256 of the raw file bytes.
    pub archive_sha256: String,
    pub database_bytes: u64,
    /// Entries given to `Sink::entry`.
    pub entries: u64,
    /// Aegir 3 members not restored, as named in the tarball (./settings.php, ./drushrc.php).
    pub skipped: Vec<String>,
}

/// Reads and checks `path`, handing the SQL and every checked entry to `sink`.
///
/// Our format is checked against its manifest as it streams, so a damaged archive may already
/// have delivered part of its content when the error comes: the caller discards its staging.
/// Nothing unsafe is ever delivered.
pub fn read(path: &Path, limits: Limits, sink: &mut dyn Sink) -> Result<Report, ArchiveError> {
    let open_context = format!("reading {}", path.display());
    let (format, file) = open_archive(path)?;
    // Shares the file offset, so after decoding it reads exactly what the decoders left.
    let mut rest = file.try_clone().map_err(io_error(&open_context))?;

    let budget = Budget::new(limits);
    let mut file_hasher = Sha256::new();
    let mut report = {
        let raw = HashingReader {
            inner: file,
            hasher: &mut file_hasher,
        };
        let decoder: Box<dyn Read + '_> = match format {
            Format::Aegir => Box::new(
                zstd::stream::read::Decoder::new(raw)
                    .map_err(io_error("starting zstd decompression"))?,
            ),
            Format::Aegir3 => Box::new(flate2::read::GzDecoder::new(raw)),
        };
        let archive = tar::Archive::new(CountingReader {
            inner: decoder,
            budget: &budget,
        });
        match format {
            Format::Aegir => read_ours(archive, &budget, sink, false)?,
            Format::Aegir3 => read_aegir3(archive, &budget, sink)?,
        }
    };
    io::copy(&mut rest, &mut HashSink(&mut file_hasher)).map_err(io_error(&open_context))?;
    report.archive_sha256 = crate::hex::encode(&file_hasher.finalize());
    Ok(report)
}

/// Reads the SQL of one of our archives, and nothing after it, into `sql`: for the extra
/// connections of a parallel restore, while one `read` of the same file checks all of it
/// against its manifest (which comes last). Returns the SQL's size.
pub fn read_database(
    path: &Path,
    limits: Limits,
    sql: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    let (format, file) = open_archive(path)?;
    if format != Format::Aegir {
        return Err(ArchiveError::Corrupt(format!(
            "{}: only aegird's own archives can be read in parallel",
            path.display()
        )));
    }
    let budget = Budget::new(limits);
    let decoder =
        zstd::stream::read::Decoder::new(file).map_err(io_error("starting zstd decompression"))?;
    let archive = tar::Archive::new(CountingReader {
        inner: decoder,
        budget: &budget,
    });
    let report = read_ours(archive, &budget, &mut SqlOnly(sql), true)?;
    Ok(report.database_bytes)
}

/// A sink for `read_database`, which stops before any entry.
struct SqlOnly<'a>(&'a mut dyn Write);

impl Sink for SqlOnly<'_> {
    fn database(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn entry(&mut self, entry: &SafeEntry, _data: &mut dyn Read) -> io::Result<()> {
        Err(io::Error::other(format!(
            "{}: not expected when reading the database alone",
            entry.path
        )))
    }
}

/// `read` with a sink that discards, under `Limits::for_archive`.
pub fn verify(path: &Path) -> Result<Report, ArchiveError> {
    let size = fs::metadata(path)
        .map_err(io_error(format!("reading {}", path.display())))?
        .len();
    read(path, Limits::for_archive(size), &mut Discard)
}

struct Discard;

impl Sink for Discard {
    fn database(&mut self, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn entry(&mut self, _entry: &SafeEntry, _data: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// What a member of our format has been seen as, for the comparison with the manifest.
struct SeenMember {
    kind: MemberKind,
    size: u64,
    sha256: Option<String>,
    target: Option<String>,
}

/// The first member, header.json, read and checked: what the archive is a backup of, and
/// that this build reads its format.
fn read_header<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    parser: &mut Parser,
    budget: &Budget,
    on_error: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<HeaderDoc, ArchiveError> {
    let Some((first, mut entry)) = parser.next(entries, budget, on_error)? else {
        return Err(ArchiveError::NotABackup("the archive is empty".to_string()));
    };
    if normalize_path(&first.name).ok().as_deref() != Some(HEADER_MEMBER)
        || !is_regular(first.entry_type)
    {
        return Err(ArchiveError::NotABackup(format!(
            "the first member is {}, not {HEADER_MEMBER}",
            first.display_name()
        )));
    }
    if first.size > MAX_HEADER_JSON {
        return Err(ArchiveError::NotABackup(format!(
            "{HEADER_MEMBER} is {} bytes",
            first.size
        )));
    }
    let header_doc: HeaderDoc =
        serde_json::from_slice(&read_member(&mut entry, first.size, HEADER_MEMBER, budget)?)
            .map_err(|e| ArchiveError::NotABackup(format!("{HEADER_MEMBER}: {e}")))?;
    drop(entry);
    if header_doc.format != FORMAT_NAME {
        return Err(ArchiveError::NotABackup(format!(
            "{HEADER_MEMBER} names the format {:?}",
            header_doc.format
        )));
    }
    if header_doc.version != FORMAT_VERSION {
        return Err(ArchiveError::NotABackup(format!(
            "format version {} is not supported (this build reads version {FORMAT_VERSION})",
            header_doc.version
        )));
    }

    Ok(header_doc)
}

/// The file opened at its start, and its format by its magic bytes.
fn open_archive(path: &Path) -> Result<(Format, File), ArchiveError> {
    let open_context = format!("reading {}", path.display());
    let mut file = File::open(path).map_err(io_error(&open_context))?;
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut file, &mut magic).map_err(io_error(&open_context))?;
    let format = if got == 4 && magic == ZSTD_MAGIC {
        Format::Aegir
    } else if got >= 2 && magic[..2] == GZIP_MAGIC {
        Format::Aegir3
    } else {
        return Err(ArchiveError::NotABackup(format!(
            "{} is neither zstd nor gzip",
            path.display()
        )));
    };
    file.seek(SeekFrom::Start(0))
        .map_err(io_error(&open_context))?;
    Ok((format, file))
}

/// What [`peek`] found.
#[derive(Debug, Clone)]
pub struct Peek {
    pub format: Format,
    /// Ours only: Aegir 3 tarballs carry no header (their uri is in their name).
    pub header: Option<Header>,
}

impl Peek {
    pub fn format_name(&self) -> &'static str {
        match self.format {
            Format::Aegir => "aegir",
            Format::Aegir3 => "aegir3",
        }
    }
}

/// A first look, before anything is changed: the format and, for ours, the checked header,
/// read from the first member without decompressing the rest. An Aegir 3 tarball has no
/// header: only its first tar block is checked here; `read` checks every member.
pub fn peek(path: &Path) -> Result<Peek, ArchiveError> {
    let (format, file) = open_archive(path)?;
    // The header is at most MAX_HEADER_JSON; the budget only has to let it through.
    let budget = Budget::new(Limits {
        max_bytes: 2 * MAX_HEADER_JSON,
        max_entries: 2,
    });
    match format {
        Format::Aegir => {
            let decoder = zstd::stream::read::Decoder::new(file)
                .map_err(io_error("starting zstd decompression"))?;
            let mut archive = tar::Archive::new(CountingReader {
                inner: decoder,
                budget: &budget,
            });
            let on_error = |e: io::Error| budget.stream_error("reading the archive", e);
            let mut entries = archive.entries().map_err(on_error)?.raw(true);
            let doc = read_header(&mut entries, &mut Parser::default(), &budget, &on_error)?;
            Ok(Peek {
                format,
                header: Some(doc.header),
            })
        }
        Format::Aegir3 => {
            let mut block = [0u8; 512];
            let got = read_up_to(&mut flate2::read::GzDecoder::new(file), &mut block)
                .map_err(|e| ArchiveError::Corrupt(format!("not a gzip-compressed tar: {e}")))?;
            if got < block.len() || &block[257..262] != b"ustar" {
                return Err(ArchiveError::NotABackup(
                    "a gzip file, but not of a tar archive".into(),
                ));
            }
            Ok(Peek {
                format,
                header: None,
            })
        }
    }
}

/// `database_only`: stop after the database chunks (nothing after them is read or checked).
fn read_ours<R: Read>(
    mut archive: tar::Archive<R>,
    budget: &Budget,
    sink: &mut dyn Sink,
    database_only: bool,
) -> Result<Report, ArchiveError> {
    let on_error = |e: io::Error| budget.stream_error("reading the archive", e);
    let mut entries = archive.entries().map_err(on_error)?.raw(true);
    let mut parser = Parser::default();

    let header_doc = read_header(&mut entries, &mut parser, budget, &on_error)?;

    let mut checker = Checker::new(true);
    let mut seen: HashMap<String, SeenMember> = HashMap::new();
    let mut db_hasher = Sha256::new();
    let mut db_bytes = 0u64;
    let mut chunks = 0u64;
    let mut tree_started = false;
    let mut delivered = 0u64;
    let mut manifest: Option<Manifest> = None;

    while let Some((member, mut entry)) = parser.next(&mut entries, budget, &on_error)? {
        let name = member.display_name();
        if manifest.is_some() {
            return Err(ArchiveError::Corrupt(format!(
                "{name}: a member after {MANIFEST_MEMBER}"
            )));
        }
        let path = normalize_path(&member.name).map_err(|reason| ArchiveError::Unsafe {
            member: name.clone(),
            reason,
        })?;
        if database_only && chunks > 0 && !path.starts_with(DATABASE_PREFIX) {
            return Ok(Report {
                format: Format::Aegir,
                manifest: None,
                archive_sha256: String::new(),
                database_bytes: db_bytes,
                entries: 0,
                skipped: Vec::new(),
            });
        }

        if path == MANIFEST_MEMBER {
            if !is_regular(member.entry_type) {
                return Err(unsafe_member(&name, "manifest.json must be a regular file"));
            }
            let json = read_member(&mut entry, member.size, &name, budget)?;
            manifest = Some(
                serde_json::from_slice(&json)
                    .map_err(|e| ArchiveError::Corrupt(format!("{MANIFEST_MEMBER}: {e}")))?,
            );
            continue;
        }
        if path == HEADER_MEMBER {
            return Err(ArchiveError::Corrupt(format!("{name}: a second header")));
        }
        if let Some(chunk) = path.strip_prefix(DATABASE_PREFIX) {
            if tree_started {
                return Err(ArchiveError::Corrupt(format!(
                    "{name}: a database chunk after the site's files"
                )));
            }
            if !is_regular(member.entry_type) {
                return Err(unsafe_member(
                    &name,
                    "a database chunk must be a regular file",
                ));
            }
            let index = chunk
                .strip_suffix(".sql")
                .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok());
            if index != Some(chunks) {
                return Err(ArchiveError::Corrupt(format!(
                    "{name}: expected {DATABASE_PREFIX}{chunks:06}.sql"
                )));
            }
            // Reading the database alone checks nothing against the manifest (which comes
            // last): the full read beside it does, so no hashing here.
            let mut reader = MemberReader::new(&mut entry, member.size, !database_only);
            let hasher = (!database_only).then_some(&mut db_hasher);
            db_bytes += copy_sql(&mut reader, hasher, sink, &name, budget)?;
            seen.insert(
                path,
                SeenMember {
                    kind: MemberKind::File,
                    size: member.size,
                    sha256: reader.hasher.map(|h| crate::hex::encode(&h.finalize())),
                    target: None,
                },
            );
            chunks += 1;
            continue;
        }

        if chunks == 0 {
            return Err(ArchiveError::Corrupt(format!(
                "{name}: the archive has no database dump before the site's files"
            )));
        }
        tree_started = true;
        let checked = checker
            .check(&member)
            .map_err(|reason| unsafe_member(&name, &reason))?
            .ok_or_else(|| unsafe_member(&name, "outside files/, private/ and site/"))?;
        let entry_meta = checked.entry;
        let sha256 = deliver(sink, &entry_meta, &mut entry, budget, true)?;
        delivered += 1;
        let (kind, size, target) = match &entry_meta.kind {
            EntryKind::Dir => (MemberKind::Dir, 0, None),
            EntryKind::File { size } => (MemberKind::File, *size, None),
            EntryKind::Symlink { target } => (MemberKind::Symlink, 0, Some(target.clone())),
            EntryKind::Hardlink { target } => (MemberKind::Hardlink, 0, Some(target.clone())),
        };
        // Repeated directory entries are harmless to extract; keep the last.
        seen.insert(
            entry_meta.path.clone(),
            SeenMember {
                kind,
                size,
                sha256,
                target,
            },
        );
    }

    let manifest = manifest.ok_or_else(|| {
        ArchiveError::Corrupt(format!("the archive ends before {MANIFEST_MEMBER}"))
    })?;
    if chunks == 0 {
        return Err(ArchiveError::Corrupt(
            "the archive holds no database dump".to_string(),
        ));
    }
    drain_trailer(archive.into_inner(), budget, true)?;

    let db_sha = crate::hex::encode(&db_hasher.finalize());
    check_manifest(
        &manifest,
        &header_doc.header,
        chunks,
        db_bytes,
        &db_sha,
        seen,
    )?;
    Ok(Report {
        format: Format::Aegir,
        manifest: Some(manifest),
        archive_sha256: String::new(),
        database_bytes: db_bytes,
        entries: delivered,
        skipped: Vec::new(),
    })
}

fn check_manifest(
    manifest: &Manifest,
    header: &Header,
    chunks: u64,
    db_bytes: u64,
    db_sha: &str,
    mut seen: HashMap<String, SeenMember>,
) -> Result<(), ArchiveError> {
    if manifest.format != FORMAT_NAME || manifest.version != FORMAT_VERSION {
        return Err(ArchiveError::Corrupt(format!(
            "{MANIFEST_MEMBER}: format {:?} version {}",
            manifest.format, manifest.version
        )));
    }
    if &manifest.header != header {
        return Err(ArchiveError::Corrupt(format!(
            "{MANIFEST_MEMBER}: its header fields differ from {HEADER_MEMBER}"
        )));
    }
    if manifest.database.chunks != chunks {
        return Err(ArchiveError::Corrupt(format!(
            "{MANIFEST_MEMBER} lists {} database chunks, the archive holds {chunks}",
            manifest.database.chunks
        )));
    }
    if manifest.database.size != db_bytes || manifest.database.sha256 != db_sha {
        return Err(ArchiveError::Checksum {
            member: "database".to_string(),
        });
    }
    for listed in &manifest.members {
        let Some(found) = seen.remove(&listed.path) else {
            return Err(ArchiveError::Corrupt(format!(
                "{}: listed in {MANIFEST_MEMBER} but not in the archive",
                listed.path
            )));
        };
        if found.kind != listed.kind || found.target != listed.target {
            return Err(ArchiveError::Corrupt(format!(
                "{}: differs from its entry in {MANIFEST_MEMBER}",
                listed.path
            )));
        }
        if found.kind == MemberKind::File
            && (found.size != listed.size || found.sha256 != listed.sha256)
        {
            return Err(ArchiveError::Checksum {
                member: listed.path.clone(),
            });
        }
    }
    if let Some(extra) = seen.keys().min() {
        return Err(ArchiveError::Corrupt(format!(
            "{extra}: not listed in {MANIFEST_MEMBER}"
        )));
    }
    Ok(())
}

fn read_aegir3<R: Read>(
    mut archive: tar::Archive<R>,
    budget: &Budget,
    sink: &mut dyn Sink,
) -> Result<Report, ArchiveError> {
    let on_error = |e: io::Error| budget.stream_error("reading the archive", e);
    let mut entries = archive.entries().map_err(on_error)?.raw(true);
    let mut parser = Parser::default();
    let mut checker = Checker::new(false);
    let mut db_bytes = None;
    let mut delivered = 0u64;
    let mut skipped = Vec::new();

    while let Some((member, mut entry)) = parser.next(&mut entries, budget, &on_error)? {
        let name = member.display_name();
        let is_database = normalize_path(&member.name).ok().as_deref() == Some("database.sql");
        if is_database && !is_regular(member.entry_type) {
            return Err(unsafe_member(&name, "database.sql must be a regular file"));
        }
        // Every member is checked, restored or not: an archive that carries one hostile entry
        // is not trusted for the rest either.
        let Some(checked) = checker
            .check(&member)
            .map_err(|reason| unsafe_member(&name, &reason))?
        else {
            continue;
        };
        if is_database {
            let mut hasher = Sha256::new();
            let mut reader = MemberReader::new(&mut entry, member.size, false);
            db_bytes = Some(copy_sql(
                &mut reader,
                Some(&mut hasher),
                sink,
                &name,
                budget,
            )?);
        } else if checked.in_tree {
            deliver(sink, &checked.entry, &mut entry, budget, false)?;
            delivered += 1;
        } else {
            skipped.push(name);
        }
    }
    // GNU tar pads to a 10 KiB record; reading to the end also makes gzip check its CRC.
    drain_trailer(archive.into_inner(), budget, false)?;
    let database_bytes = db_bytes
        .ok_or_else(|| ArchiveError::NotABackup("the tarball has no database.sql".to_string()))?;
    Ok(Report {
        format: Format::Aegir3,
        manifest: None,
        archive_sha256: String::new(),
        database_bytes,
        entries: delivered,
        skipped,
    })
}

fn unsafe_member(member: &str, reason: &str) -> ArchiveError {
    ArchiveError::Unsafe {
        member: member.to_string(),
        reason: reason.to_string(),
    }
}

fn is_regular(kind: EntryType) -> bool {
    matches!(kind, EntryType::Regular | EntryType::Continuous)
}

/// Reads a small member into memory.
fn read_member(
    entry: &mut dyn Read,
    size: u64,
    member: &str,
    budget: &Budget,
) -> Result<Vec<u8>, ArchiveError> {
    let mut reader = MemberReader::new(entry, size, false);
    let mut out = Vec::new();
    if let Err(e) = reader.read_to_end(&mut out) {
        return Err(budget.stream_error(member, e));
    }
    Ok(out)
}

fn copy_sql(
    reader: &mut MemberReader<'_>,
    mut hasher: Option<&mut Sha256>,
    sink: &mut dyn Sink,
    member: &str,
    budget: &Budget,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(budget.stream_error(member, e)),
        };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
        sink.database(&buf[..n])
            .map_err(io_error(format!("{member}: writing the SQL")))?;
    }
}

/// Hands one checked entry to the sink, then drains what it left so the hash covers it all.
fn deliver(
    sink: &mut dyn Sink,
    entry: &SafeEntry,
    data: &mut dyn Read,
    budget: &Budget,
    hash: bool,
) -> Result<Option<String>, ArchiveError> {
    let size = match entry.kind {
        EntryKind::File { size } => size,
        _ => 0,
    };
    let is_file = matches!(entry.kind, EntryKind::File { .. });
    let mut reader = MemberReader::new(data, size, hash && is_file);
    let result = sink.entry(entry, &mut reader);
    // A read failure inside the sink is the archive's fault, not the sink's.
    if let Some((kind, message)) = reader.fault.take() {
        return Err(budget.stream_error(&entry.path, io::Error::new(kind, message)));
    }
    result.map_err(io_error(format!("{}: extracting", entry.path)))?;
    if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
        return Err(budget.stream_error(&entry.path, e));
    }
    Ok(reader.hasher.map(|h| crate::hex::encode(&h.finalize())))
}

/// Reads what follows the tar end marker. For our format it must be zeros (the end blocks and
/// record padding): anything else was put there after the manifest.
fn drain_trailer<R: Read>(
    mut rest: R,
    budget: &Budget,
    zeros_only: bool,
) -> Result<(), ArchiveError> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(budget.stream_error("the end of the archive", e)),
        };
        if zeros_only && buf[..n].iter().any(|&b| b != 0) {
            return Err(ArchiveError::Corrupt(format!(
                "data after {MANIFEST_MEMBER} and the tar end marker"
            )));
        }
    }
}

/// Writes the SQL to one writer and a clean tar stream (only checked entries, uid/gid 0,
/// mode & 0o777, mtime kept) to another, for the host's `mariadb` and `tar -x -C <staging>`.
pub struct TarSink<S: Write, T: Write> {
    sql: S,
    tar: tar::Builder<T>,
}

impl<S: Write, T: Write> TarSink<S, T> {
    pub fn new(sql: S, tar: T) -> Self {
        TarSink {
            sql,
            tar: tar::Builder::new(tar),
        }
    }

    /// Writes the tar end marker and flushes both writers.
    pub fn into_inner(mut self) -> io::Result<(S, T)> {
        self.sql.flush()?;
        let mut tar = self.tar.into_inner()?;
        tar.flush()?;
        Ok((self.sql, tar))
    }
}

impl<S: Write, T: Write> Sink for TarSink<S, T> {
    fn database(&mut self, data: &[u8]) -> io::Result<()> {
        self.sql.write_all(data)
    }

    fn entry(&mut self, entry: &SafeEntry, data: &mut dyn Read) -> io::Result<()> {
        let mut header = entry_header(entry);
        match &entry.kind {
            EntryKind::Dir => {
                self.tar
                    .append_data(&mut header, format!("{}/", entry.path), io::empty())
            }
            EntryKind::File { .. } => self.tar.append_data(&mut header, &entry.path, data),
            EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
                self.tar.append_link(&mut header, &entry.path, target)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: budget, hashing, member data
// ---------------------------------------------------------------------------------------------

/// The decompression budget shared by the counting reader and the per-member checks.
struct Budget {
    max_bytes: u64,
    max_entries: u64,
    used: Cell<u64>,
    entries: Cell<u64>,
    /// Set once the budget is exceeded, so the I/O error it causes downstream (inside the tar
    /// crate or a sink) is reported as TooLarge rather than as corruption.
    tripped: Cell<bool>,
}

impl Budget {
    fn new(limits: Limits) -> Budget {
        Budget {
            max_bytes: limits.max_bytes,
            max_entries: limits.max_entries,
            used: Cell::new(0),
            entries: Cell::new(0),
            tripped: Cell::new(false),
        }
    }

    fn unlimited() -> Budget {
        Budget::new(Limits {
            max_bytes: u64::MAX,
            max_entries: u64::MAX,
        })
    }

    fn too_large(&self) -> ArchiveError {
        self.tripped.set(true);
        ArchiveError::TooLarge {
            limit: self.max_bytes,
        }
    }

    /// Checks a member's declared size before any of it is read.
    fn admit(&self, size: u64) -> Result<(), ArchiveError> {
        if size > self.max_bytes.saturating_sub(self.used.get()) {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn count_entry(&self, member: &str) -> Result<(), ArchiveError> {
        let n = self.entries.get() + 1;
        self.entries.set(n);
        if n > self.max_entries {
            return Err(unsafe_member(
                member,
                &format!(
                    "the archive holds more than {} members; refusing it",
                    self.max_entries
                ),
            ));
        }
        Ok(())
    }

    fn stream_error(&self, context: &str, e: io::Error) -> ArchiveError {
        if self.tripped.get() {
            return ArchiveError::TooLarge {
                limit: self.max_bytes,
            };
        }
        ArchiveError::Corrupt(format!("{context}: {e}"))
    }
}

/// Counts decompressed bytes against the budget, so headers that lie, padding and data after
/// the end marker are all paid for.
struct CountingReader<'b, R> {
    inner: R,
    budget: &'b Budget,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget.tripped.get() {
            return Err(io::Error::other("decompression budget exceeded"));
        }
        let n = self.inner.read(buf)?;
        let used = self.budget.used.get().saturating_add(n as u64);
        self.budget.used.set(used);
        if used > self.budget.max_bytes {
            self.budget.tripped.set(true);
            return Err(io::Error::other("decompression budget exceeded"));
        }
        Ok(n)
    }
}

struct HashingReader<'h> {
    inner: File,
    hasher: &'h mut Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct HashSink<'h>(&'h mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Yields exactly one member's declared bytes, hashing them. The tar crate reports a stream
/// that ends inside a member as a short read, not an error; this turns it into one, and
/// remembers the first failure so it is blamed on the archive even when a sink reports it.
struct MemberReader<'r> {
    inner: &'r mut dyn Read,
    remaining: u64,
    hasher: Option<Sha256>,
    fault: Option<(io::ErrorKind, String)>,
}

impl<'r> MemberReader<'r> {
    fn new(inner: &'r mut dyn Read, size: u64, hash: bool) -> Self {
        MemberReader {
            inner,
            remaining: size,
            hasher: hash.then(Sha256::new),
            fault: None,
        }
    }
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                let message = "the archive ends inside this member".to_string();
                self.fault = Some((io::ErrorKind::UnexpectedEof, message.clone()));
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, message))
            }
            Ok(n) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&buf[..n]);
                }
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                if self.fault.is_none() {
                    self.fault = Some((e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tar parsing: our own handling of GNU long names and PAX records
// ---------------------------------------------------------------------------------------------

/// One tar member with its extension records applied.
#[derive(Debug)]
struct RawMember {
    name: Vec<u8>,
    link: Option<Vec<u8>>,
    entry_type: EntryType,
    mode: u32,
    mtime: u64,
    size: u64,
    /// A PAX-format sparse file: typed as regular, but its data is a sparse map.
    pax_sparse: bool,
}

impl RawMember {
    fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Default)]
struct PaxOverrides {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
}

/// The tar crate's own handling of long names reads them into memory with no bound, so the
/// stream is read raw and the extension records are handled here, capped.
#[derive(Default)]
struct Parser {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<PaxOverrides>,
}

type RawEntry<'a, R> = tar::Entry<'a, R>;

impl Parser {
    fn pending(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }

    fn next<'a, R: Read>(
        &mut self,
        entries: &mut tar::Entries<'a, R>,
        budget: &Budget,
        on_error: &dyn Fn(io::Error) -> ArchiveError,
    ) -> Result<Option<(RawMember, RawEntry<'a, R>)>, ArchiveError> {
        loop {
            let mut entry = match entries.next() {
                None if self.pending() => {
                    return Err(ArchiveError::Corrupt(
                        "the archive ends after an extension record with no member".to_string(),
                    ))
                }
                None => return Ok(None),
                Some(Err(e)) => return Err(on_error(e)),
                Some(Ok(entry)) => entry,
            };
            let size = entry.size();
            budget.admit(size)?;
            let entry_type = entry.header().entry_type();
            match entry_type {
                EntryType::GNULongName => {
                    self.long_name = Some(read_record(&mut entry, size, "long name", budget)?);
                    continue;
                }
                EntryType::GNULongLink => {
                    self.long_link = Some(read_record(&mut entry, size, "long link", budget)?);
                    continue;
                }
                EntryType::XHeader => {
                    if size > MAX_PAX_RECORD {
                        return Err(ArchiveError::Corrupt(format!(
                            "a PAX record of {size} bytes"
                        )));
                    }
                    let data = read_member(&mut entry, size, "a PAX record", budget)?;
                    self.pax = Some(parse_pax(&data)?);
                    continue;
                }
                // Global records only carry defaults for metadata this module does not use.
                EntryType::XGlobalHeader => continue,
                _ => {}
            }

            let header = entry.header();
            let mut name = self
                .long_name
                .take()
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let mut link = self
                .long_link
                .take()
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
            let pax = self.pax.take().unwrap_or_default();
            if let Some(path) = pax.path {
                name = path;
            }
            if let Some(target) = pax.linkpath {
                link = Some(target);
            }
            let display = String::from_utf8_lossy(&name).into_owned();
            if pax.size.is_some_and(|s| s != size) {
                // Parsers that disagree on where a member ends see different archives.
                return Err(unsafe_member(
                    &display,
                    "its PAX size disagrees with its tar header",
                ));
            }
            budget.count_entry(&display)?;
            let mode = header
                .mode()
                .map_err(|e| ArchiveError::Corrupt(format!("{display}: mode field: {e}")))?;
            let mtime = header
                .mtime()
                .map_err(|e| ArchiveError::Corrupt(format!("{display}: mtime field: {e}")))?;
            return Ok(Some((
                RawMember {
                    name,
                    link,
                    entry_type,
                    mode,
                    mtime,
                    size,
                    pax_sparse: pax.sparse,
                },
                entry,
            )));
        }
    }
}

fn read_record(
    entry: &mut dyn Read,
    size: u64,
    what: &str,
    budget: &Budget,
) -> Result<Vec<u8>, ArchiveError> {
    if size > MAX_NAME_RECORD {
        return Err(ArchiveError::Corrupt(format!(
            "a {what} record of {size} bytes"
        )));
    }
    let mut data = read_member(entry, size, what, budget)?;
    while data.last() == Some(&0) {
        data.pop();
    }
    Ok(data)
}

/// PAX records are `<len> <key>=<value>\n`; only the keys that change what a member is matter.
fn parse_pax(data: &[u8]) -> Result<PaxOverrides, ArchiveError> {
    let bad = || ArchiveError::Corrupt("a malformed PAX record".to_string());
    let mut out = PaxOverrides::default();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => out.path = Some(value.to_vec()),
            b"linkpath" => out.linkpath = Some(value.to_vec()),
            b"size" => {
                out.size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(bad)?,
                )
            }
            k if k.starts_with(b"GNU.sparse.") => out.sparse = true,
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Safety checks
// ---------------------------------------------------------------------------------------------

/// What a path has been seen as so far in one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    /// A parent of an earlier member with no entry of its own (tar -x creates it).
    ImplicitDir,
    /// A regular file or a hard link to one.
    File,
    Symlink,
}

struct Checked {
    entry: SafeEntry,
    /// Under files/, private/ or site/: the only members a restore extracts.
    in_tree: bool,
}

/// The rules of the module, applied in archive order because several depend on what came
/// before (symlinks on the way, hard link targets, duplicates).
struct Checker {
    /// Refuse members outside the trees (our format), rather than check and report them as
    /// not restored (Aegir 3's whole site dir, whose code is read as site/).
    tree_only: bool,
    seen: HashMap<String, Seen>,
}

fn in_tree(path: &str) -> bool {
    group(path).is_some()
}

/// Where a tree lands on restore. files/ and private/ are siblings in the site's own
/// directory; site/ goes into the application's code, elsewhere and not writable by the web
/// server: so no link may cross from one group to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Data,
    Code,
}

impl Group {
    fn trees(self) -> &'static str {
        match self {
            Group::Data => "files/ and private/",
            Group::Code => "site/",
        }
    }
}

/// The trees a backup carries: the data (files/ and private/) and the site's own code (site/:
/// what the application keeps per site beside its settings, such as Drupal's
/// `sites/<uri>/modules`). Everything else in a site dir is rebuilt, not restored.
fn group(path: &str) -> Option<Group> {
    match path.split('/').next().unwrap_or_default() {
        "files" | "private" => Some(Group::Data),
        "site" => Some(Group::Code),
        _ => None,
    }
}

/// An Aegir 3 member's path as one of ours: the site's own code (modules/, themes/,
/// local.settings.php ...) moves under site/; data and rebuilt files keep their place.
fn aegir3_path(path: String) -> String {
    let top = path.split('/').next().unwrap_or_default();
    if path.is_empty() || AEGIR3_NOT_CODE.contains(&top) {
        path
    } else {
        format!("site/{path}")
    }
}

/// Strips `./` and empty components, refusing absolute and `..` paths. "" is the root.
fn normalize_path(name: &[u8]) -> Result<String, String> {
    let name = std::str::from_utf8(name).map_err(|_| "its name is not valid UTF-8".to_string())?;
    if name.starts_with('/') {
        return Err("absolute path".to_string());
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("the path contains a `..` component".to_string()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Checks a symlink target and returns it in canonical form (no `.` or empty components).
///
/// Resolution is lexical from the link's own directory, which is only sound if every
/// directory it walks through is real: so `..` may appear only at the start (it climbs the
/// link's own, real, parents), and later components only descend, through directories or
/// through earlier symlinks that were themselves checked to stay inside.
fn check_symlink(link_path: &str, target: &[u8]) -> Result<String, String> {
    let target =
        std::str::from_utf8(target).map_err(|_| "symlink target is not valid UTF-8".to_string())?;
    if target.is_empty() {
        return Err("symlink with an empty target".to_string());
    }
    if target.starts_with('/') {
        return Err(format!("symlink to an absolute path ({target})"));
    }
    let mut ups = 0usize;
    let mut down: Vec<&str> = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if down.is_empty() => ups += 1,
            ".." => {
                return Err(format!(
                    "symlink target {target} has `..` after its first component"
                ))
            }
            p => down.push(p),
        }
    }
    let mut resolved: Vec<&str> = link_path.split('/').collect();
    resolved.pop();
    if ups > resolved.len() {
        return Err(format!("symlink to {target} leaves the archive"));
    }
    resolved.truncate(resolved.len() - ups);
    resolved.extend(down.iter().copied());
    if let Some(from) = group(link_path) {
        if group(&resolved.join("/")) != Some(from) {
            return Err(format!(
                "symlink to {target} points outside {}",
                from.trees()
            ));
        }
    }
    let mut canonical: Vec<&str> = vec![".."; ups];
    canonical.extend(down);
    if canonical.is_empty() {
        return Ok(".".to_string());
    }
    Ok(canonical.join("/"))
}

impl Checker {
    fn new(tree_only: bool) -> Checker {
        Checker {
            tree_only,
            seen: HashMap::new(),
        }
    }

    /// The path a member is checked and delivered under.
    fn path_of(&self, name: &[u8]) -> Result<String, String> {
        let path = normalize_path(name)?;
        Ok(if self.tree_only {
            path
        } else {
            aegir3_path(path)
        })
    }

    /// Ok(None) is the archive root's own directory entry (`./`), which carries nothing.
    fn check(&mut self, member: &RawMember) -> Result<Option<Checked>, String> {
        let path = self.path_of(&member.name)?;
        let is_dir = member.entry_type == EntryType::Directory;
        if path.is_empty() {
            return if is_dir && !self.tree_only {
                Ok(None)
            } else {
                Err("an entry for the archive root".to_string())
            };
        }
        let tree = in_tree(&path);
        if let Some(reserved) = path
            .strip_prefix("site/")
            .map(|rest| rest.split('/').next().unwrap_or_default())
            .filter(|top| SITE_RESERVED.contains(top))
        {
            return Err(format!(
                "aegird writes the site's {reserved} itself; a backup may not carry it"
            ));
        }
        if self.tree_only && !tree {
            return Err("outside files/, private/ and site/".to_string());
        }

        let kind = match member.entry_type {
            _ if member.pax_sparse => return Err("a sparse file".to_string()),
            EntryType::Regular | EntryType::Continuous => EntryKind::File { size: member.size },
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink | EntryType::Link => {
                let target = member
                    .link
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| "a link with no target".to_string())?;
                if member.entry_type == EntryType::Symlink {
                    EntryKind::Symlink {
                        target: check_symlink(&path, target)?,
                    }
                } else {
                    EntryKind::Hardlink {
                        target: self.check_hardlink(group(&path), target)?,
                    }
                }
            }
            EntryType::Char => return Err("a character device".to_string()),
            EntryType::Block => return Err("a block device".to_string()),
            EntryType::Fifo => return Err("a FIFO".to_string()),
            EntryType::GNUSparse => return Err("a sparse file".to_string()),
            other => {
                return Err(format!(
                    "an unsupported entry type ({:?})",
                    char::from(other.as_byte())
                ))
            }
        };
        if member.mode & 0o4000 != 0 {
            return Err("setuid bit set".to_string());
        }
        if member.mode & 0o2000 != 0 && !is_dir {
            return Err("setgid bit on a non-directory".to_string());
        }

        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            match self.seen.get(parent) {
                Some(Seen::Symlink) => {
                    return Err(format!("the path passes through the symlink {parent}"))
                }
                Some(Seen::File) => return Err(format!("the path lies beneath the file {parent}")),
                _ => {}
            }
        }
        match self.seen.get(path.as_str()) {
            None => {}
            Some(Seen::Dir | Seen::ImplicitDir) if is_dir => {}
            Some(Seen::Dir | Seen::ImplicitDir) => {
                return Err("it would replace a directory".to_string())
            }
            Some(_) => return Err("it appears twice in the archive".to_string()),
        }

        for (i, _) in path.match_indices('/') {
            self.seen
                .entry(path[..i].to_string())
                .or_insert(Seen::ImplicitDir);
        }
        let seen = match kind {
            EntryKind::Dir => Seen::Dir,
            EntryKind::File { .. } | EntryKind::Hardlink { .. } => Seen::File,
            EntryKind::Symlink { .. } => Seen::Symlink,
        };
        self.seen.insert(path.clone(), seen);
        Ok(Some(Checked {
            entry: SafeEntry {
                path,
                kind,
                mode: member.mode & 0o777,
                mtime: member.mtime,
            },
            in_tree: tree,
        }))
    }

    /// A hard link may only name an earlier regular file, inside the link's own group of
    /// trees if it is in one: anything else makes `tar -x` link to whatever happens to be at
    /// that path, or lets the web server write the site's code through a file it may write.
    fn check_hardlink(&self, link_group: Option<Group>, target: &[u8]) -> Result<String, String> {
        let target = self
            .path_of(target)
            .map_err(|reason| format!("hard link target: {reason}"))?;
        if let Some(from) = link_group {
            if group(&target) != Some(from) {
                return Err(format!("hard link to {target}, outside {}", from.trees()));
            }
        }
        if self.seen.get(target.as_str()) != Some(&Seen::File) {
            return Err(format!(
                "hard link to {target}, which is not an earlier regular file"
            ));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn header() -> Header {
        Header {
            environment_id: 42,
            uri: "example.com".to_string(),
            release: "r1".to_string(),
            app: "drupal8".to_string(),
            app_version: Some("10.2.3".to_string()),
            db_engine: "mariadb".to_string(),
            db_version: "10.11.6".to_string(),
            created: "2025-01-02T03:04:05Z".to_string(),
        }
    }

    fn opts(chunk_size: usize) -> WriteOptions {
        WriteOptions {
            level: 3,
            threads: 2,
            chunk_size,
        }
    }

    /// Incompressible bytes, so sizes and truncation points mean something.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn sql_dump(len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!(
                    "INSERT INTO node VALUES ({i},'title {i}','body {}');\n",
                    i * 7919
                )
                .as_bytes(),
            );
            i += 1;
        }
        out
    }

    fn sha256_hex(data: &[u8]) -> String {
        crate::hex::encode(&Sha256::digest(data))
    }

    fn gnu_tar(cwd: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("tar")
            .current_dir(cwd)
            .args(args)
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Reads `archive` through a TarSink piped into a real `tar -x`, as a restore does.
    fn extract(
        archive: &Path,
        limits: Limits,
        staging: &Path,
    ) -> (Result<Report, ArchiveError>, Vec<u8>) {
        fs::create_dir_all(staging).unwrap();
        let mut child = Command::new("tar")
            .args(["-x", "--no-same-owner", "-C"])
            .arg(staging)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tar -x");
        let stdin = child.stdin.take().unwrap();
        let mut sink = TarSink::new(Vec::new(), stdin);
        let result = read(archive, limits, &mut sink);
        // Dropping the sink closes tar's stdin either way, so it can exit.
        let sql = match &result {
            Ok(_) => sink.into_inner().unwrap().0,
            Err(_) => {
                drop(sink);
                Vec::new()
            }
        };
        let out = child.wait_with_output().unwrap();
        if result.is_ok() {
            assert!(
                out.status.success(),
                "tar -x: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (result, sql)
    }

    #[derive(Debug, PartialEq)]
    enum Node {
        Dir(u32),
        File { mode: u32, sha: String, mtime: i64 },
        Link(PathBuf),
    }

    fn snapshot(root: &Path) -> BTreeMap<String, Node> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let meta = fs::symlink_metadata(&path).unwrap();
                let mode = meta.permissions().mode() & 0o777;
                if meta.file_type().is_symlink() {
                    out.insert(rel, Node::Link(fs::read_link(&path).unwrap()));
                } else if meta.is_dir() {
                    out.insert(rel, Node::Dir(mode));
                    walk(root, &path, out);
                } else {
                    let sha = sha256_hex(&fs::read(&path).unwrap());
                    out.insert(
                        rel,
                        Node::File {
                            mode,
                            sha,
                            mtime: meta.mtime(),
                        },
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A site dir with every kind of entry the writer must carry.
    fn make_site(site: &Path) {
        let long = format!("files/a/{}.txt", "n".repeat(120));
        for dir in ["files/a/b", "private/files", "private/temp"] {
            fs::create_dir_all(site.join(dir)).unwrap();
        }
        fs::write(site.join("files/a/b/deep.txt"), b"deep\n").unwrap();
        fs::write(site.join("files/empty"), b"").unwrap();
        fs::write(site.join("files/big.bin"), noise(5_000_000, 7)).unwrap();
        fs::write(site.join(&long), b"long name\n").unwrap();
        fs::write(site.join("private/files/secret.txt"), b"secret\n").unwrap();
        fs::set_permissions(
            site.join("private/files/secret.txt"),
            PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        symlink("a/b/deep.txt", site.join("files/link")).unwrap();
        symlink("../../big.bin", site.join("files/a/b/up")).unwrap();
        symlink("../private/files", site.join("files/priv")).unwrap();
        fs::hard_link(site.join("files/a/b/deep.txt"), site.join("files/hard.txt")).unwrap();
        fs::set_permissions(site.join("files/a"), PermissionsExt::from_mode(0o750)).unwrap();
        // Aegir 3's files dirs are 2770: kept, with the setgid bit dropped.
        fs::set_permissions(
            site.join("private/files"),
            PermissionsExt::from_mode(0o2770),
        )
        .unwrap();
    }

    fn write_archive(dest: &Path, dump: &[u8], tree: &[u8], chunk: usize) -> Written {
        let mut writer = Writer::create(dest, header(), opts(chunk)).unwrap();
        assert_eq!(
            writer.add_database(&mut &dump[..]).unwrap(),
            dump.len() as u64
        );
        writer.add_tree(&mut &tree[..]).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn peek_reads_the_header_and_tells_formats_apart() {
        let tmp = tempfile::tempdir().unwrap();
        let ours_path = tmp.path().join("ours.tar.zst");
        fs::write(
            &ours_path,
            ours(|t| {
                t.file("files/a.txt", b"a");
            }),
        )
        .unwrap();
        let p = peek(&ours_path).unwrap();
        assert_eq!((p.format_name(), p.header), ("aegir", Some(header())));

        let a3 = tmp.path().join("a3.tar.gz");
        fs::write(&a3, aegir3(|_| {})).unwrap();
        let p = peek(&a3).unwrap();
        assert_eq!((p.format_name(), p.header), ("aegir3", None));

        for (name, bytes) in [
            ("headerless.tar.zst", {
                let mut t = RawTar::new();
                t.file("database/000000.sql", b"SELECT 1;");
                zst(&t.end())
            }),
            (
                "gzip-not-tar.tar.gz",
                gz(b"just some text, not a tar archive"),
            ),
            ("plain.tar", RawTar::new().file("x", b"x").end()),
        ] {
            let path = tmp.path().join(name);
            fs::write(&path, bytes).unwrap();
            let err = peek(&path).unwrap_err();
            assert!(
                matches!(err, ArchiveError::NotABackup(_) | ArchiveError::Corrupt(_)),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn round_trip_through_gnu_tar() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        make_site(&site);
        let tree = gnu_tar(&site, &["-c", "files", "private"]);
        let dump = sql_dump(300_000);
        fs::create_dir(tmp.path().join("out")).unwrap();
        let dest = tmp.path().join("out/example.com.tar.zst");

        let mut writer = Writer::create(&dest, header(), opts(64 << 10)).unwrap();
        assert!(partial_path(&dest).exists());
        let mode = fs::metadata(partial_path(&dest))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            writer.add_database(&mut &dump[..]).unwrap(),
            dump.len() as u64
        );
        writer.add_tree(&mut &tree[..]).unwrap();
        let written = writer.finish().unwrap();

        assert_eq!(names_in(&tmp.path().join("out")), ["example.com.tar.zst"]);
        assert_eq!(written.size, fs::metadata(&dest).unwrap().len());
        let sum = Command::new("sha256sum").arg(&dest).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(sum.split_whitespace().next(), Some(written.sha256.as_str()));
        let manifest = &written.manifest;
        assert_eq!(manifest.database.chunks, 5);
        assert_eq!(manifest.database.sha256, sha256_hex(&dump));
        assert!(manifest.skipped.is_empty(), "{:?}", manifest.skipped);
        let kinds: BTreeMap<&str, MemberKind> = manifest
            .members
            .iter()
            .map(|m| (m.path.as_str(), m.kind))
            .collect();
        assert_eq!(kinds["files/link"], MemberKind::Symlink);
        assert_eq!(kinds["files/a/b"], MemberKind::Dir);
        assert!(kinds.values().any(|k| *k == MemberKind::Hardlink));
        let big = manifest
            .members
            .iter()
            .find(|m| m.path == "files/big.bin")
            .unwrap();
        assert_eq!(big.size, 5_000_000);

        let report = verify(&dest).unwrap();
        assert_eq!(report.format, Format::Aegir);
        assert_eq!(report.archive_sha256, written.sha256);
        assert_eq!(report.manifest.as_ref(), Some(manifest));
        assert_eq!(report.database_bytes, dump.len() as u64);

        let staging = tmp.path().join("staging");
        let (report, sql) = extract(&dest, Limits::for_archive(written.size), &staging);
        let report = report.unwrap();
        assert_eq!(sql, dump);
        assert_eq!(report.entries as usize, manifest.members.len() - 5);
        assert_eq!(names_in(&staging), ["files", "private"]);
        let mut expected = snapshot(&site);
        // The setgid bit is dropped on restore; the rest of the mode is kept.
        expected.insert("private/files".to_string(), Node::Dir(0o770));
        assert_eq!(snapshot(&staging), expected);
        let ino = |p: &str| fs::metadata(staging.join(p)).unwrap().ino();
        assert_eq!(ino("files/hard.txt"), ino("files/a/b/deep.txt"));
        let private = fs::metadata(staging.join("private/files")).unwrap();
        assert_eq!(private.permissions().mode() & 0o7000, 0);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("b.tar.zst");
        let mut writer = Writer::create(&dest, header(), WriteOptions::default()).unwrap();
        writer.add_database(&mut &b"SELECT 1;\n"[..]).unwrap();
        drop(writer);
        assert!(names_in(tmp.path()).is_empty());

        // The partial file is created exclusively: a second writer cannot clobber it.
        let _first = Writer::create(&dest, header(), WriteOptions::default()).unwrap();
        assert!(Writer::create(&dest, header(), WriteOptions::default()).is_err());
    }

    #[test]
    fn writer_refuses_steps_out_of_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("b.tar.zst");
        let mut writer = Writer::create(&dest, header(), opts(1024)).unwrap();
        assert!(writer.add_tree(&mut &RawTar::new().end()[..]).is_err());
        let writer = Writer::create(&tmp.path().join("c.tar.zst"), header(), opts(1024)).unwrap();
        assert!(writer.finish().is_err());
        // The failed steps poisoned nothing on disk: the first writer still owns its file.
        assert_eq!(names_in(tmp.path()), ["b.tar.zst.partial"]);
    }

    #[test]
    fn empty_dump_still_makes_a_chunk() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("b.tar.zst");
        let written = write_archive(&dest, b"", &RawTar::new().end(), 1024);
        assert_eq!(written.manifest.database.chunks, 1);
        assert_eq!(verify(&dest).unwrap().database_bytes, 0);
    }

    #[test]
    fn writer_skips_and_lists_unsafe_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let outside = outside.to_str().unwrap();
        let mut input = RawTar::new();
        input
            .dir("files/", 0o755)
            .file("files/ok.txt", b"ok")
            .file("./files/dot.txt", b"dot")
            .file("files/../escape.txt", b"x")
            .file(outside, b"x")
            .entry("files/tty", EntryType::Char, 0o644, "", b"")
            .entry("files/fifo", EntryType::Fifo, 0o644, "", b"")
            .entry("files/su", EntryType::Regular, 0o4755, "", b"x")
            .entry("files/sg", EntryType::Regular, 0o2755, "", b"x")
            .dir("files/gdir/", 0o2770)
            .entry("files/abs", EntryType::Symlink, 0o777, outside, b"")
            .entry("files/esc", EntryType::Symlink, 0o777, "../../x", b"")
            .entry(
                "files/site",
                EntryType::Symlink,
                0o777,
                "../settings.php",
                b"",
            )
            .file("settings.php", b"<?php")
            .entry("files/hl", EntryType::Link, 0o644, "files/missing", b"")
            .entry("files/hl2", EntryType::Link, 0o644, "files/ok.txt", b"")
            .entry("files/ok.txt/under", EntryType::Regular, 0o644, "", b"x")
            .entry("files/sticky", EntryType::Regular, 0o1644, "", b"kept");
        let input = input.end();
        let dest = tmp.path().join("b.tar.zst");
        let written = write_archive(&dest, b"SELECT 1;\n", &input, 1024);

        let skipped: BTreeMap<&str, &str> = written
            .manifest
            .skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        let expected_skips = [
            "files/../escape.txt",
            outside,
            "files/tty",
            "files/fifo",
            "files/su",
            "files/sg",
            "files/abs",
            "files/esc",
            "files/site",
            "settings.php",
            "files/hl",
            "files/ok.txt/under",
        ];
        for path in expected_skips {
            assert!(
                skipped.contains_key(path),
                "{path} not skipped: {skipped:?}"
            );
        }
        assert_eq!(skipped.len(), expected_skips.len(), "{skipped:?}");
        assert!(skipped["files/tty"].contains("character device"));
        assert!(skipped["settings.php"].contains("outside"));

        let kept: Vec<(&str, u32)> = written
            .manifest
            .members
            .iter()
            .map(|m| (m.path.as_str(), 0))
            .collect();
        let kept: Vec<&str> = kept.into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            kept,
            [
                "database/000000.sql",
                "files",
                "files/ok.txt",
                "files/dot.txt",
                "files/gdir",
                "files/hl2",
                "files/sticky"
            ]
        );

        let staging = tmp.path().join("staging");
        let (report, _) = extract(&dest, Limits::for_archive(written.size), &staging);
        report.unwrap();
        let mode = |p: &str| fs::metadata(staging.join(p)).unwrap().permissions().mode();
        assert_eq!(mode("files/gdir") & 0o7777, 0o770);
        assert_eq!(mode("files/sticky") & 0o7777, 0o644);
        assert_eq!(fs::read(staging.join("files/hl2")).unwrap(), b"ok");
        assert!(!Path::new(outside).exists());
    }

    #[test]
    fn reads_an_aegir3_tarball() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("example.com");
        for dir in [
            "files/styles",
            "private/files",
            "private/temp",
            "modules/custom",
        ] {
            fs::create_dir_all(site.join(dir)).unwrap();
        }
        let dump = sql_dump(50_000);
        fs::write(site.join("database.sql"), &dump).unwrap();
        fs::write(site.join("settings.php"), b"<?php $databases = [];").unwrap();
        fs::write(site.join("drushrc.php"), b"<?php").unwrap();
        fs::write(site.join("modules/custom/x.module"), b"<?php").unwrap();
        fs::write(site.join("files/a.jpg"), noise(10_000, 3)).unwrap();
        fs::write(site.join("files/styles/b.jpg"), noise(1_000, 4)).unwrap();
        fs::write(site.join("private/files/c.txt"), b"private").unwrap();
        fs::set_permissions(site.join("files"), PermissionsExt::from_mode(0o2770)).unwrap();
        let tarball = tmp.path().join("example.com-20240101.120000.tar.gz");
        gnu_tar(&site, &["czf", tarball.to_str().unwrap(), "."]);

        let staging = tmp.path().join("staging");
        let (report, sql) = extract(&tarball, Limits::for_archive(1), &staging);
        let report = report.unwrap();
        assert_eq!(report.format, Format::Aegir3);
        assert_eq!(report.manifest, None);
        assert_eq!(sql, dump);
        assert_eq!(report.database_bytes, dump.len() as u64);
        for skipped in ["./settings.php", "./drushrc.php"] {
            assert!(
                report.skipped.iter().any(|s| s == skipped),
                "{:?}",
                report.skipped
            );
        }
        assert!(!report.skipped.iter().any(|s| s.contains("files/")));
        assert!(!report.skipped.iter().any(|s| s.contains("modules")));
        // The site's own code is read as site/, where a restore puts it back into the
        // application's sites/<uri>.
        assert_eq!(names_in(&staging), ["files", "private", "site"]);
        assert_eq!(
            fs::read(staging.join("site/modules/custom/x.module")).unwrap(),
            b"<?php"
        );
        assert_eq!(
            fs::read(staging.join("files/styles/b.jpg")).unwrap(),
            noise(1_000, 4)
        );
        assert_eq!(
            fs::read(staging.join("private/files/c.txt")).unwrap(),
            b"private"
        );
        assert!(staging.join("private/temp").is_dir());
        let sum = Command::new("sha256sum").arg(&tarball).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(
            sum.split_whitespace().next(),
            Some(report.archive_sha256.as_str())
        );
        assert_eq!(verify(&tarball).unwrap().entries, report.entries);
    }

    #[test]
    fn limits_for_archive() {
        assert_eq!(Limits::for_archive(1).max_bytes, 256 << 20);
        assert_eq!(Limits::for_archive(10 << 30).max_bytes, 2000 << 30);
        assert_eq!(Limits::for_archive(u64::MAX).max_bytes, u64::MAX);
        assert_eq!(Limits::for_archive(1).max_entries, 5_000_000);
    }

    #[test]
    fn writer_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Writer>();
    }

    // -----------------------------------------------------------------------------------------
    // The malicious corpus
    // -----------------------------------------------------------------------------------------

    /// A tar stream built header by header, so names and types can be anything.
    struct RawTar(Vec<u8>);

    impl RawTar {
        fn new() -> Self {
            RawTar(Vec::new())
        }

        fn header(name: &str, kind: EntryType, mode: u32, link: &str, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            {
                let old = h.as_old_mut();
                old.name[..name.len()].copy_from_slice(name.as_bytes());
                old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            h
        }

        /// An entry whose header declares `declared` bytes whatever `data` holds.
        fn sized(
            &mut self,
            name: &str,
            kind: EntryType,
            mode: u32,
            link: &str,
            declared: u64,
            data: &[u8],
        ) -> &mut Self {
            let h = Self::header(name, kind, mode, link, declared);
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }

        fn entry(
            &mut self,
            name: &str,
            kind: EntryType,
            mode: u32,
            link: &str,
            data: &[u8],
        ) -> &mut Self {
            self.sized(name, kind, mode, link, data.len() as u64, data)
        }

        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(name, EntryType::Regular, 0o644, "", data)
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
            self.entry(name, EntryType::Directory, mode, "", b"")
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
            self.entry(name, EntryType::Symlink, 0o777, target, b"")
        }

        fn end(&mut self) -> Vec<u8> {
            self.0.extend(std::iter::repeat_n(0u8, 1024));
            std::mem::take(&mut self.0)
        }
    }

    fn zst(tar: &[u8]) -> Vec<u8> {
        zstd::encode_all(tar, 1).unwrap()
    }

    fn gz(tar: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(tar).unwrap();
        enc.finish().unwrap()
    }

    /// Our format's opening members, then whatever the case adds.
    fn ours_prefix() -> RawTar {
        let doc = HeaderDoc {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            header: header(),
        };
        let mut tar = RawTar::new();
        tar.file(HEADER_MEMBER, &serde_json::to_vec(&doc).unwrap())
            .file("database/000000.sql", b"SELECT 1;\n");
        tar
    }

    fn ours(tree: impl FnOnce(&mut RawTar)) -> Vec<u8> {
        let mut tar = ours_prefix();
        tree(&mut tar);
        tar.file(MANIFEST_MEMBER, b"{}");
        zst(&tar.end())
    }

    fn aegir3(tree: impl FnOnce(&mut RawTar)) -> Vec<u8> {
        let mut tar = RawTar::new();
        tar.dir("./", 0o755).file("./database.sql", b"SELECT 1;\n");
        tree(&mut tar);
        gz(&tar.end())
    }

    #[derive(Debug, Clone, Copy)]
    enum Want {
        Unsafe,
        Corrupt,
        TooLarge,
        Checksum,
        NotABackup,
    }

    fn matches_want(err: &ArchiveError, want: Want) -> bool {
        matches!(
            (err, want),
            (ArchiveError::Unsafe { .. }, Want::Unsafe)
                | (ArchiveError::Corrupt(_), Want::Corrupt)
                | (ArchiveError::TooLarge { .. }, Want::TooLarge)
                | (ArchiveError::Checksum { .. }, Want::Checksum)
                | (ArchiveError::NotABackup(_), Want::NotABackup)
        )
    }

    /// Extracts the archive `build` makes (given the parent dir, for absolute-path targets)
    /// into `<parent>/staging` and checks the read fails as expected with nothing outside
    /// staging. `ext` picks the file name only; the reader sniffs the magic.
    fn refused(
        ext: &str,
        build: impl FnOnce(&Path) -> Vec<u8>,
        limits: Option<Limits>,
        want: Want,
        names: Option<&str>,
    ) -> ArchiveError {
        let work = tempfile::tempdir().unwrap();
        let parent = work.path().join("p");
        fs::create_dir(&parent).unwrap();
        let staging = parent.join("staging");
        let bytes = build(&parent);
        let archive = work.path().join(format!("evil.{ext}"));
        fs::write(&archive, &bytes).unwrap();
        let limits = limits.unwrap_or_else(|| Limits::for_archive(bytes.len() as u64));
        let (result, _) = extract(&archive, limits, &staging);
        let err = result.expect_err("a malicious archive was accepted");
        assert!(matches_want(&err, want), "expected {want:?}, got {err:?}");
        if let Some(member) = names {
            assert!(
                err.to_string().contains(member),
                "{err} does not name {member}"
            );
        }
        assert_eq!(names_in(&parent), ["staging"]);
        assert!(fs::symlink_metadata(parent.join("escaped")).is_err());
        err
    }

    fn escaped(parent: &Path) -> String {
        parent.join("escaped").to_str().unwrap().to_string()
    }

    #[test]
    fn evil_absolute_path() {
        let mut abs = String::new();
        refused(
            "tar.zst",
            |p| {
                abs = escaped(p);
                ours(|t| {
                    t.file(&escaped(p), b"pwned");
                })
            },
            None,
            Want::Unsafe,
            None,
        );
        assert!(abs.starts_with('/'));
        refused(
            "tar.gz",
            |p| {
                aegir3(|t| {
                    t.file(&escaped(p), b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("absolute path"),
        );
    }

    #[test]
    fn evil_dotdot_traversal() {
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.dir("./files/", 0o755)
                        .file("./files/../../escaped", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/../../escaped"),
        );
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.file("files/../../escaped", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("files/../../escaped"),
        );
    }

    #[test]
    fn evil_symlink_to_absolute_path() {
        refused(
            "tar.zst",
            |p| {
                ours(|t| {
                    t.symlink("files/abs", &escaped(p))
                        .file("files/abs/x", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("files/abs"),
        );
    }

    #[test]
    fn evil_symlink_escaping_with_dotdot() {
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.symlink("./files/up", "../../escaped")
                        .file("./files/up/x", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/up"),
        );
        // Inside the archive but outside the trees: a restored link to settings.php.
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.symlink("files/site", "../settings.php");
                })
            },
            None,
            Want::Unsafe,
            Some("files/site"),
        );
    }

    #[test]
    fn evil_file_written_through_a_symlink() {
        let err = refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.dir("files/d/", 0o755)
                        .symlink("files/d/l", "..")
                        .file("files/d/l/x", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("files/d/l/x"),
        );
        assert!(err.to_string().contains("symlink"));
    }

    #[test]
    fn evil_symlink_chain_escape() {
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.symlink("files/c", ".")
                        .symlink("files/a", "c/..")
                        .file("files/a/escaped", b"pwned");
                })
            },
            None,
            Want::Unsafe,
            Some("files/a"),
        );
        // A symlink replacing a directory that already holds members re-roots them.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.file("./files/d/x", b"x")
                        .symlink("./files/d", "../private");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/d"),
        );
    }

    #[test]
    fn evil_links_between_code_and_data() {
        // The site's code lands in the application's directory, its data in aegird's: a link
        // from one to the other would point elsewhere once restored, or let the web server
        // write code through a file it may write.
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.symlink("site/data", "../files/x");
                })
            },
            None,
            Want::Unsafe,
            Some("site/data"),
        );
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.symlink("files/code", "../site/x.php");
                })
            },
            None,
            Want::Unsafe,
            Some("files/code"),
        );
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.file("files/a.php", b"<?php").entry(
                        "site/a.php",
                        EntryType::Link,
                        0o644,
                        "files/a.php",
                        b"",
                    );
                })
            },
            None,
            Want::Unsafe,
            Some("site/a.php"),
        );
        // Aegir 3's code is read as site/, so the same rule holds there.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.file("./files/a.php", b"<?php").entry(
                        "./modules/a.php",
                        EntryType::Link,
                        0o644,
                        "./files/a.php",
                        b"",
                    );
                })
            },
            None,
            Want::Unsafe,
            Some("./modules/a.php"),
        );
    }

    #[test]
    fn evil_site_member_aegird_writes() {
        for member in ["site/settings.php", "site/files/x", "site/.aegir-env"] {
            let err = refused(
                "tar.zst",
                |_| {
                    ours(|t| {
                        t.file(member, b"<?php");
                    })
                },
                None,
                Want::Unsafe,
                Some(member),
            );
            assert!(err.to_string().contains("itself"), "{err}");
        }
    }

    #[test]
    fn evil_hard_link_outside() {
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.file("./settings.php", b"<?php").entry(
                        "./files/h",
                        EntryType::Link,
                        0o644,
                        "./settings.php",
                        b"",
                    );
                })
            },
            None,
            Want::Unsafe,
            Some("./files/h"),
        );
        refused(
            "tar.zst",
            |p| {
                ours(|t| {
                    t.entry("files/h", EntryType::Link, 0o644, &escaped(p), b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/h"),
        );
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/h", EntryType::Link, 0o644, "../escaped", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/h"),
        );
    }

    #[test]
    fn evil_hard_link_to_a_non_member() {
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/h", EntryType::Link, 0o644, "files/nope", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/h"),
        );
    }

    #[test]
    fn evil_char_device() {
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/tty", EntryType::Char, 0o666, "", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/tty"),
        );
    }

    #[test]
    fn evil_block_device() {
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.entry("./files/sda", EntryType::Block, 0o660, "", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/sda"),
        );
    }

    #[test]
    fn evil_fifo() {
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/fifo", EntryType::Fifo, 0o644, "", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/fifo"),
        );
    }

    #[test]
    fn evil_setuid_and_setgid_files() {
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.entry("./files/su", EntryType::Regular, 0o4755, "", b"#!/bin/sh\n");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/su"),
        );
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/sg", EntryType::Regular, 0o2755, "", b"#!/bin/sh\n");
                })
            },
            None,
            Want::Unsafe,
            Some("files/sg"),
        );
        // Even where it is not restored, an Aegir 3 member is checked.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.entry("./modules/su", EntryType::Regular, 0o4755, "", b"x");
                })
            },
            None,
            Want::Unsafe,
            Some("./modules/su"),
        );
    }

    #[test]
    fn evil_sparse_and_unknown_types() {
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.entry("files/sparse", EntryType::GNUSparse, 0o644, "", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("files/sparse"),
        );
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.entry("./files/v", EntryType::new(b'V'), 0o644, "", b"");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/v"),
        );
    }

    #[test]
    fn evil_database_not_a_regular_file() {
        let plain = |tar: &mut RawTar| gz(&tar.end());
        refused(
            "tar.gz",
            |p| plain(RawTar::new().symlink("./database.sql", &escaped(p))),
            None,
            Want::Unsafe,
            Some("./database.sql"),
        );
        refused(
            "tar.gz",
            |_| plain(RawTar::new().dir("./database.sql/", 0o755)),
            None,
            Want::Unsafe,
            Some("./database.sql"),
        );
        refused(
            "tar.zst",
            |p| {
                let doc = HeaderDoc {
                    format: FORMAT_NAME.to_string(),
                    version: FORMAT_VERSION,
                    header: header(),
                };
                let mut tar = RawTar::new();
                tar.file(HEADER_MEMBER, &serde_json::to_vec(&doc).unwrap())
                    .symlink("database/000000.sql", &escaped(p));
                zst(&tar.end())
            },
            None,
            Want::Unsafe,
            Some("database/000000.sql"),
        );
        // No dump at all.
        refused(
            "tar.gz",
            |_| plain(RawTar::new().file("./files/a", b"a")),
            None,
            Want::NotABackup,
            Some("database.sql"),
        );
    }

    /// A real archive from the Writer, as a tar stream, for cases that tamper with one.
    fn real_tar(work: &Path) -> Vec<u8> {
        let mut input = RawTar::new();
        input
            .dir("files/", 0o755)
            .file("files/hello.txt", b"HELLO-ORIGINAL")
            .file("files/noise.bin", &noise(300_000, 9));
        let dest = work.join("real.tar.zst");
        write_archive(&dest, &sql_dump(100_000), &input.end(), 32 << 10);
        let tar = zstd::decode_all(&fs::read(&dest).unwrap()[..]).unwrap();
        fs::remove_file(&dest).unwrap();
        tar
    }

    /// The members of a tar stream without extension records, as (header, data) blocks.
    fn members(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 512 <= tar.len() && tar[pos..pos + 512].iter().any(|&b| b != 0) {
            let mut block = [0u8; 512];
            block.copy_from_slice(&tar[pos..pos + 512]);
            let h = tar::Header::from_byte_slice(&block);
            let size = h.entry_size().unwrap() as usize;
            let name = String::from_utf8(h.path_bytes().into_owned()).unwrap();
            let span = 512 + size.div_ceil(512) * 512;
            out.push((name, tar[pos..pos + span].to_vec()));
            pos += span;
        }
        out
    }

    fn assemble(members: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut tar: Vec<u8> = members.iter().flat_map(|(_, b)| b.clone()).collect();
        tar.extend(std::iter::repeat_n(0u8, 1024));
        tar
    }

    #[test]
    fn evil_truncated_archive() {
        refused(
            "tar.zst",
            |p| {
                let full = zst(&real_tar(p.parent().unwrap()));
                full[..full.len() / 2].to_vec()
            },
            None,
            Want::Corrupt,
            None,
        );
        refused(
            "tar.gz",
            |_| {
                let full = aegir3(|t| {
                    t.file("./files/noise.bin", &noise(200_000, 5));
                });
                full[..full.len() / 2].to_vec()
            },
            None,
            Want::Corrupt,
            None,
        );
        // Cut at a member boundary inside the tar, zstd stream intact: no manifest.
        refused(
            "tar.zst",
            |p| {
                let tar = real_tar(p.parent().unwrap());
                let mut m = members(&tar);
                m.truncate(m.len() - 1);
                zst(&m.iter().flat_map(|(_, b)| b.clone()).collect::<Vec<u8>>())
            },
            None,
            Want::Corrupt,
            Some(MANIFEST_MEMBER),
        );
    }

    #[test]
    fn evil_decompression_bomb() {
        // 2 GiB of zeros behind an honest header, as concatenated zstd frames so the test
        // does not have to compress 2 GiB.
        let started = Instant::now();
        let err = refused(
            "tar.zst",
            |_| {
                let mut head = ours_prefix();
                head.sized("files/zeros", EntryType::Regular, 0o644, "", 2 << 30, b"");
                let mut out = zst(&head.0);
                let frame = zst(&vec![0u8; 64 << 20]);
                for _ in 0..32 {
                    out.extend_from_slice(&frame);
                }
                out.extend(zst(&RawTar::new().end()));
                assert!(out.len() < 8 << 20, "bomb is {} bytes", out.len());
                out
            },
            None,
            Want::TooLarge,
            None,
        );
        assert!(matches!(err, ArchiveError::TooLarge { limit } if limit == 256 << 20));
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn evil_bomb_of_honest_members_and_trailing_zeros() {
        // Each member fits, their sum does not.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    for i in 0..8 {
                        t.file(&format!("./files/{i}"), &vec![0u8; 1 << 20]);
                    }
                })
            },
            Some(Limits {
                max_bytes: 4 << 20,
                max_entries: 100,
            }),
            Want::TooLarge,
            None,
        );
        // Zeros after the end marker are never a member; only counting the bytes catches them.
        refused(
            "tar.zst",
            |p| {
                let mut tar = real_tar(p.parent().unwrap());
                tar.extend(std::iter::repeat_n(0u8, 64 << 20));
                zst(&tar)
            },
            Some(Limits {
                max_bytes: 16 << 20,
                max_entries: 100,
            }),
            Want::TooLarge,
            None,
        );
        // Too many members.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    for i in 0..20 {
                        t.file(&format!("./files/{i}"), b"x");
                    }
                })
            },
            Some(Limits {
                max_bytes: 1 << 30,
                max_entries: 10,
            }),
            Want::Unsafe,
            Some("./files/"),
        );
    }

    #[test]
    fn evil_lying_header_size() {
        // Claims a terabyte: refused on the header, before anything is read.
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.sized(
                        "files/huge",
                        EntryType::Regular,
                        0o644,
                        "",
                        1 << 40,
                        b"tiny",
                    );
                })
            },
            None,
            Want::TooLarge,
            None,
        );
        // Claims more than the stream holds.
        refused(
            "tar.zst",
            |_| {
                let mut tar = ours_prefix();
                tar.sized("files/short", EntryType::Regular, 0o644, "", 4096, b"short");
                zst(&tar.0)
            },
            None,
            Want::Corrupt,
            Some("files/short"),
        );
    }

    #[test]
    fn evil_member_modified_after_writing() {
        refused(
            "tar.zst",
            |p| {
                let tar = real_tar(p.parent().unwrap());
                let at = tar
                    .windows(14)
                    .position(|w| w == b"HELLO-ORIGINAL")
                    .unwrap();
                let mut tar = tar;
                tar[at..at + 14].copy_from_slice(b"HELLO-MODIFIED");
                zst(&tar)
            },
            None,
            Want::Checksum,
            Some("files/hello.txt"),
        );
        refused(
            "tar.zst",
            |p| {
                let mut tar = real_tar(p.parent().unwrap());
                let at = tar.windows(13).position(|w| w == b"INSERT INTO n").unwrap();
                tar[at] = b'X';
                zst(&tar)
            },
            None,
            Want::Checksum,
            Some("database"),
        );
    }

    #[test]
    fn evil_members_differ_from_the_manifest() {
        // A member the manifest does not list.
        refused(
            "tar.zst",
            |p| {
                let mut m = members(&real_tar(p.parent().unwrap()));
                let mut extra = RawTar::new();
                extra.file("files/extra.txt", b"extra");
                let at = m.len() - 1;
                m.insert(at, ("files/extra.txt".to_string(), extra.0));
                zst(&assemble(&m))
            },
            None,
            Want::Corrupt,
            Some("files/extra.txt"),
        );
        // A listed member that is missing.
        refused(
            "tar.zst",
            |p| {
                let mut m = members(&real_tar(p.parent().unwrap()));
                m.retain(|(name, _)| name != "files/hello.txt");
                zst(&assemble(&m))
            },
            None,
            Want::Corrupt,
            Some("files/hello.txt"),
        );
        // Anything after the manifest.
        refused(
            "tar.zst",
            |p| {
                let mut m = members(&real_tar(p.parent().unwrap()));
                let mut extra = RawTar::new();
                extra.file("files/late.txt", b"late");
                m.push(("files/late.txt".to_string(), extra.0));
                zst(&assemble(&m))
            },
            None,
            Want::Corrupt,
            Some("files/late.txt"),
        );
    }

    #[test]
    fn evil_zstd_tar_without_header() {
        refused(
            "tar.zst",
            |_| {
                let mut tar = RawTar::new();
                tar.file("database/000000.sql", b"SELECT 1;")
                    .file("files/a", b"a");
                zst(&tar.end())
            },
            None,
            Want::NotABackup,
            Some(HEADER_MEMBER),
        );
        // A newer format version is refused up front, not half-read.
        refused(
            "tar.zst",
            |_| {
                let mut tar = RawTar::new();
                tar.file(
                    HEADER_MEMBER,
                    br#"{"format":"aegir-backup","version":2,"environment_id":1,"uri":"a","release":"r","app":"x","app_version":null,"db_engine":"mariadb","db_version":"1","created":"c"}"#,
                );
                zst(&tar.end())
            },
            None,
            Want::NotABackup,
            Some("version 2"),
        );
        // Neither zstd nor gzip.
        refused(
            "tar",
            |_| RawTar::new().file("database.sql", b"x").end(),
            None,
            Want::NotABackup,
            None,
        );
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}").len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    #[test]
    fn pax_records_are_honoured_or_refused() {
        // A PAX path replaces the header's: the member is read under its real name.
        let tmp = tempfile::tempdir().unwrap();
        let tarball = tmp.path().join("pax.tar.gz");
        let mut tar = RawTar::new();
        tar.file("./database.sql", b"SELECT 1;")
            .entry(
                "PaxHeaders/x",
                EntryType::XHeader,
                0o644,
                "",
                &pax_record("path", "./files/from-pax.txt"),
            )
            .file("./files/header-name", b"pax");
        fs::write(&tarball, gz(&tar.end())).unwrap();
        let staging = tmp.path().join("staging");
        let (report, _) = extract(&tarball, Limits::for_archive(1), &staging);
        assert_eq!(report.unwrap().entries, 1);
        assert_eq!(
            fs::read(staging.join("files/from-pax.txt")).unwrap(),
            b"pax"
        );

        // A PAX size that disagrees with the header is two archives in one.
        refused(
            "tar.gz",
            |_| {
                aegir3(|t| {
                    t.entry("x", EntryType::XHeader, 0o644, "", &pax_record("size", "1"))
                        .file("./files/two-faced", b"1234");
                })
            },
            None,
            Want::Unsafe,
            Some("./files/two-faced"),
        );
        // An oversized long-name record is refused before it is buffered.
        refused(
            "tar.zst",
            |_| {
                ours(|t| {
                    t.sized(
                        "././@LongLink",
                        EntryType::GNULongName,
                        0o644,
                        "",
                        1 << 20,
                        b"",
                    );
                })
            },
            None,
            Want::Corrupt,
            Some("long name"),
        );
    }
}
