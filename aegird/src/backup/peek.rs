//! The first look at an archive: which format it is and, for ours, what it is a backup of,
//! read from its first member without decompressing the rest.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::archive::{ArchiveError, Format, Header, FORMAT_NAME, FORMAT_VERSION};

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

#[derive(Deserialize)]
struct HeaderDoc {
    format: String,
    version: u32,
    #[serde(flatten)]
    header: Header,
}

/// At most this much of header.json is read: it is a few hundred bytes.
const MAX_HEADER: u64 = 64 * 1024;

pub fn peek(path: &Path) -> Result<Peek, ArchiveError> {
    let io = |e: std::io::Error| ArchiveError::Io {
        context: path.display().to_string(),
        source: e,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| ArchiveError::NotABackup("shorter than any archive".into()))?;
    let file = BufReader::new(File::open(path).map_err(io)?);
    match magic {
        [0x28, 0xb5, 0x2f, 0xfd] => {
            let decoder = zstd::stream::read::Decoder::new(file).map_err(io)?;
            let mut tar = tar::Archive::new(decoder);
            let mut entries = tar
                .entries()
                .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            let first = entries
                .next()
                .ok_or_else(|| ArchiveError::Corrupt("the archive is empty".into()))?
                .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
            let name = first
                .path()
                .map_err(|e| ArchiveError::Corrupt(e.to_string()))?
                .display()
                .to_string();
            if name != "header.json" {
                return Err(ArchiveError::NotABackup(format!(
                    "its first member is {name}, not header.json"
                )));
            }
            let mut text = String::new();
            first
                .take(MAX_HEADER)
                .read_to_string(&mut text)
                .map_err(|e| ArchiveError::Corrupt(format!("header.json: {e}")))?;
            let doc: HeaderDoc = serde_json::from_str(&text)
                .map_err(|e| ArchiveError::NotABackup(format!("header.json: {e}")))?;
            if doc.format != FORMAT_NAME || doc.version != FORMAT_VERSION {
                return Err(ArchiveError::NotABackup(format!(
                    "format {} version {}; this aegird reads {FORMAT_NAME} version {FORMAT_VERSION}",
                    doc.format, doc.version
                )));
            }
            Ok(Peek {
                format: Format::Aegir,
                header: Some(doc.header),
            })
        }
        [0x1f, 0x8b, ..] => {
            // The tar inside is checked member by member when it is read; here only that it
            // decompresses and starts like a tar.
            let mut gz = flate2::read::GzDecoder::new(file);
            let mut block = [0u8; 512];
            gz.read_exact(&mut block)
                .map_err(|e| ArchiveError::Corrupt(format!("not a gzip-compressed tar: {e}")))?;
            if &block[257..262] != b"ustar" {
                return Err(ArchiveError::NotABackup(
                    "a gzip file, but not of a tar archive".into(),
                ));
            }
            Ok(Peek {
                format: Format::Aegir3,
                header: None,
            })
        }
        _ => Err(ArchiveError::NotABackup(
            "neither zstd (aegird) nor gzip (Aegir 3)".into(),
        )),
    }
}
