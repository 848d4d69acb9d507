//! Writes a reproducible OCI image archive of aegird and the CLI, with no container daemon.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use flate2::{Compression, GzBuilder};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What goes into the image.
pub struct ImageSpec<'a> {
    /// The image's version, e.g. "0.1.0": a label, and the index's `ref.name`.
    pub version: &'a str,
    /// Every mtime in both tars, and the config's `created` time.
    pub source_date_epoch: u64,
    /// Git commit, for the `org.opencontainers.image.revision` label.
    pub revision: Option<&'a str>,
    /// The release aegird binary, shipped as /usr/bin/aegird.
    pub aegird: &'a Path,
    /// The CLI, shipped as /usr/bin/aegir.
    pub aegir: &'a Path,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `sha256:<hex>` of the image manifest (what a registry would call the image's digest).
    pub digest: String,
    /// Size in bytes of the archive written.
    pub size: u64,
}

/// The non-root user (and group) the daemon runs as.
const AEGIR_ID: u64 = 10001;
const STATE_DIR: &str = "/var/lib/aegir";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const LISTEN: &str = "0.0.0.0:7270";
const PORT: &str = "7270/tcp";
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "root:x:0:0:root:/root:/usr/sbin/nologin\n\
    aegir:x:10001:10001:Aegir:/var/lib/aegir:/usr/sbin/nologin\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\naegir:x:10001:\nnogroup:x:65534:\n";
// glibc >= 2.34 has the `files` and `dns` sources built in, so no libnss_*.so is needed.
const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";

const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Writes the image for `spec` as an OCI image layout in a tar archive at `out`.
///
/// The same inputs give the same bytes: entries are sorted, times come from
/// `source_date_epoch`, owners are numeric and modes fixed. The layer is written to
/// `<out>.layer.partial` while it is hashed (the binaries are large), and the archive to
/// `<out>.partial`, renamed to `out` once complete.
pub fn write_image(out: &Path, spec: &ImageSpec) -> Result<ImageInfo> {
    // The ustar mtime field holds 11 octal digits; past that the tar crate would need an
    // extension that not every reader knows.
    ensure!(
        spec.source_date_epoch < 1 << 33,
        "source_date_epoch {} is too far in the future for a tar header",
        spec.source_date_epoch
    );
    let mtime = spec.source_date_epoch;
    let tree = layer_tree(spec)?;

    let layer_tmp = Partial::new(out, ".layer.partial");
    let layer = write_layer(&layer_tmp.0, &tree, mtime)?;

    let created = crate::time::Utc::from_epoch(spec.source_date_epoch).rfc3339();
    let config = serde_json::to_vec(&image_config(spec, &created, &layer.diff_id))
        .context("cannot serialize the image config")?;
    let config_hex = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config_hex, config.len() as u64),
        "layers": [descriptor(MEDIA_LAYER, &layer.digest, layer.size)],
    }))
    .context("cannot serialize the image manifest")?;
    let manifest_hex = sha256_hex(&manifest);
    let mut manifest_desc = descriptor(MEDIA_MANIFEST, &manifest_hex, manifest.len() as u64);
    manifest_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": spec.version });
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_desc],
    }))
    .context("cannot serialize index.json")?;

    let mut outer = Tree::default();
    outer.add(
        "oci-layout",
        0o644,
        0,
        Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    )?;
    outer.add("index.json", 0o644, 0, Source::Bytes(index))?;
    let blobs = Path::new("blobs/sha256");
    outer.add(
        blobs.join(&layer.digest),
        0o644,
        0,
        Source::Host(layer_tmp.0.clone()),
    )?;
    outer.add(blobs.join(&config_hex), 0o644, 0, Source::Bytes(config))?;
    outer.add(blobs.join(&manifest_hex), 0o644, 0, Source::Bytes(manifest))?;

    let archive_tmp = Partial::new(out, ".partial");
    let file = File::create(&archive_tmp.0)
        .with_context(|| format!("cannot create {}", archive_tmp.0.display()))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    append_tree(&mut builder, &outer, mtime)?;
    let size = finish_file(builder.into_inner(), &archive_tmp.0)?;
    fs::rename(&archive_tmp.0, out).with_context(|| {
        format!(
            "cannot rename {} to {}",
            archive_tmp.0.display(),
            out.display()
        )
    })?;
    Ok(ImageInfo {
        digest: format!("sha256:{manifest_hex}"),
        size,
    })
}

/// The image config: how podman runs the image, and its labels.
fn image_config(spec: &ImageSpec, created: &str, diff_id: &str) -> serde_json::Value {
    let mut labels = json!({
        "org.opencontainers.image.title": "aegir",
        "org.opencontainers.image.description":
            "Aegir hosting control plane: the aegird daemon (JSON API and web UI) and the aegir CLI",
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": "GPL-2.0-or-later",
        "org.opencontainers.image.source": "https://gitlab.com/aegir/aegir",
    });
    if let Some(revision) = spec.revision {
        labels["org.opencontainers.image.revision"] = json!(revision);
    }
    json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": format!("{AEGIR_ID}:{AEGIR_ID}"),
            "Entrypoint": ["/usr/bin/aegird"],
            "Cmd": ["serve"],
            "Env": [
                format!("PATH={PATH_ENV}"),
                format!("AEGIR_LISTEN={LISTEN}"),
                format!("AEGIR_STATE_DIR={STATE_DIR}"),
                format!("SSL_CERT_FILE={CA_BUNDLE}"),
            ],
            "ExposedPorts": { PORT: {} },
            "Volumes": { STATE_DIR: {} },
            "WorkingDir": STATE_DIR,
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{
            "created": created,
            "created_by": "cargo xtask dist (xtask/src/oci.rs)",
            "comment": "aegird, aegir, their shared libraries, CA certificates, users",
        }],
    })
}

fn descriptor(media_type: &str, hex: &str, size: u64) -> serde_json::Value {
    json!({ "mediaType": media_type, "digest": format!("sha256:{hex}"), "size": size })
}

/// Everything in the image's one layer.
fn layer_tree(spec: &ImageSpec) -> Result<Tree> {
    let mut tree = Tree::default();
    // Directories whose mode or owner differ from the 0755 root default go in first, so
    // that adding files below them does not create them with the default.
    tree.add("root", 0o700, 0, Source::Dir)?;
    tree.add("tmp", 0o1777, 0, Source::Dir)?;
    tree.add(&STATE_DIR[1..], 0o700, AEGIR_ID, Source::Dir)?;

    tree.add(
        "usr/bin/aegird",
        0o755,
        0,
        Source::Host(spec.aegird.to_owned()),
    )?;
    tree.add(
        "usr/bin/aegir",
        0o755,
        0,
        Source::Host(spec.aegir.to_owned()),
    )?;
    for binary in [spec.aegird, spec.aegir] {
        for lib in runtime_files(binary)? {
            // Source::Host is read through symlinks, so each path gets the real file.
            tree.add(image_path(&lib)?, 0o755, 0, Source::Host(lib))?;
        }
    }
    let ca = Path::new(CA_BUNDLE);
    ensure!(
        ca.is_file(),
        "{CA_BUNDLE} is missing: install the ca-certificates package"
    );
    tree.add(image_path(ca)?, 0o644, 0, Source::Host(ca.to_owned()))?;
    tree.add("etc/passwd", 0o644, 0, Source::Bytes(PASSWD.into()))?;
    tree.add("etc/group", 0o644, 0, Source::Bytes(GROUP.into()))?;
    tree.add(
        "etc/nsswitch.conf",
        0o644,
        0,
        Source::Bytes(NSSWITCH.into()),
    )?;
    Ok(tree)
}

/// The dynamic loader (at its PT_INTERP path) and the shared libraries `ldd` resolves for
/// `binary`, as absolute paths on this host; nothing for a static binary.
fn runtime_files(binary: &Path) -> Result<Vec<PathBuf>> {
    let Some(interp) = elf_interpreter(binary)? else {
        return Ok(Vec::new());
    };
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd (package libc-bin)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`ldd {}` failed ({}): {}{}",
            binary.display(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut files = parse_ldd(&stdout)
        .with_context(|| format!("in the output of `ldd {}`", binary.display()))?;
    files.push(PathBuf::from(interp));
    Ok(files)
}

/// The absolute paths in `ldd` output; fails on a library that was not found.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or for the loader
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", or "linux-vdso.so.1 (0x...)" (no file).
        let (name, target) = line.split_once(" => ").unwrap_or((line, line));
        if target.starts_with("not found") {
            bail!("shared library {name} not found");
        }
        let path = target.split(" (0x").next().unwrap_or(target).trim();
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    Ok(files)
}

/// The PT_INTERP of an x86-64 ELF executable, if it has one; fails on anything but x86-64,
/// as the image config says amd64.
fn elf_interpreter(binary: &Path) -> Result<Option<String>> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    let read = || -> Result<Option<String>> {
        let mut f = File::open(binary)?;
        let mut eh = [0u8; 64];
        f.read_exact(&mut eh)
            .context("too short for an ELF header")?;
        ensure!(&eh[..4] == b"\x7fELF", "not an ELF file");
        ensure!(
            eh[4] == 2 && eh[5] == 1,
            "not a 64-bit little-endian ELF file"
        );
        let machine = u16::from_le_bytes([eh[18], eh[19]]);
        ensure!(
            machine == EM_X86_64,
            "not an x86-64 binary (e_machine {machine}) but the image is amd64"
        );
        let phoff = le_u64(&eh, 32);
        let phentsize = usize::from(u16::from_le_bytes([eh[54], eh[55]]));
        let phnum = usize::from(u16::from_le_bytes([eh[56], eh[57]]));
        ensure!(phentsize >= 56, "bad program header size {phentsize}");
        let mut ph = vec![0u8; phentsize * phnum];
        f.seek(SeekFrom::Start(phoff))?;
        f.read_exact(&mut ph)
            .context("cannot read the program headers")?;
        for h in ph.chunks_exact(phentsize) {
            if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) != PT_INTERP {
                continue;
            }
            let (offset, size) = (le_u64(h, 8), le_u64(h, 32));
            ensure!(size <= 4096, "PT_INTERP of {size} bytes");
            let mut interp = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut interp).context("cannot read PT_INTERP")?;
            let interp = String::from_utf8(interp).context("PT_INTERP is not UTF-8")?;
            let interp = interp.trim_end_matches('\0');
            ensure!(
                interp.starts_with('/'),
                "PT_INTERP {interp:?} is not absolute"
            );
            return Ok(Some(interp.to_owned()));
        }
        Ok(None)
    };
    read().with_context(|| format!("cannot read {} as an executable", binary.display()))
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// `/a/b` on the host as `a/b` in a tar: relative, and with nothing but plain components.
fn image_path(host: &Path) -> Result<PathBuf> {
    let rel = host
        .strip_prefix("/")
        .with_context(|| format!("{} is not an absolute path", host.display()))?;
    ensure!(
        rel.components().all(|c| matches!(c, Component::Normal(_))),
        "{} has `.` or `..` in it",
        host.display()
    );
    Ok(rel.to_owned())
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Dir,
    Bytes(Vec<u8>),
    /// A file on this host, read through symlinks when the tar is written.
    Host(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    /// uid and gid alike.
    owner: u64,
    source: Source,
}

/// The entries of a tar, keyed by relative path. `PathBuf` orders component by component,
/// so iterating gives each directory right before its contents: what the layer needs.
#[derive(Debug, Default)]
struct Tree(BTreeMap<PathBuf, Node>);

impl Tree {
    /// Adds an entry, and its missing parents as root-owned 0755 directories. Adding the
    /// same entry twice (a library two binaries need) is fine; a different one is not.
    fn add(&mut self, path: impl AsRef<Path>, mode: u32, owner: u64, source: Source) -> Result<()> {
        let path = path.as_ref();
        let node = Node {
            mode,
            owner,
            source,
        };
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            let existing = self.0.entry(parent.to_owned()).or_insert(Node {
                mode: 0o755,
                owner: 0,
                source: Source::Dir,
            });
            ensure!(
                existing.source == Source::Dir,
                "{} is both a file and a directory in the image",
                parent.display()
            );
        }
        match self.0.get(path) {
            Some(existing) if *existing == node => {}
            Some(existing) => bail!(
                "{} twice in the image: {existing:?} and {node:?}",
                path.display()
            ),
            None => {
                self.0.insert(path.to_owned(), node);
            }
        }
        Ok(())
    }
}

/// Appends every entry of `tree`, in order, with the fixed `mtime`.
fn append_tree<W: Write>(tar: &mut tar::Builder<W>, tree: &Tree, mtime: u64) -> Result<()> {
    for (path, node) in &tree.0 {
        let mut header = tar::Header::new_ustar();
        header.set_mode(node.mode);
        // Numeric ids only (ustar's user and group names stay empty): a host's names must
        // not leak in, and the image's own /etc/passwd gives the names.
        header.set_uid(node.owner);
        header.set_gid(node.owner);
        header.set_mtime(mtime);
        header.set_device_major(0)?;
        header.set_device_minor(0)?;
        let added = match &node.source {
            Source::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                let mut name = OsString::from(path);
                name.push("/");
                tar.append_data(&mut header, name, io::empty())
            }
            Source::Bytes(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())
            }
            Source::Host(host) => {
                let file =
                    File::open(host).with_context(|| format!("cannot open {}", host.display()))?;
                let len = file
                    .metadata()
                    .with_context(|| format!("cannot stat {}", host.display()))?
                    .len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len);
                // The tar crate pads to the header's size whatever it read, so a file that
                // shrank while being read would give a corrupt archive: count and check.
                let mut reader = CountingReader {
                    inner: file.take(len),
                    count: 0,
                };
                tar.append_data(&mut header, path, &mut reader)
                    .and_then(|()| {
                        if reader.count == len {
                            Ok(())
                        } else {
                            Err(io::Error::other(format!(
                                "{} changed size while being read",
                                host.display()
                            )))
                        }
                    })
            }
        };
        added.with_context(|| format!("cannot add {} to the tar", path.display()))?;
    }
    Ok(())
}

struct LayerBlob {
    /// Hex sha256 of the compressed layer: its blob name.
    digest: String,
    /// Hex sha256 of the uncompressed tar: the config's diff_id.
    diff_id: String,
    /// Compressed size.
    size: u64,
}

/// Writes the layer as tar+gzip to `path`, hashing both the tar and the gzip stream as they
/// pass, so the large binaries are neither held in memory nor read twice.
fn write_layer(path: &Path, tree: &Tree, mtime: u64) -> Result<LayerBlob> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // mtime 0, no file name and a fixed OS byte: a gzip header that is the same everywhere.
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(HashWriter::new(BufWriter::new(file)), Compression::best());
    let mut tar = tar::Builder::new(HashWriter::new(gz));
    append_tree(&mut tar, tree, mtime)?;
    let written = || format!("cannot write {}", path.display());
    let uncompressed = tar.into_inner().with_context(written)?;
    let diff_id = format!("{:x}", uncompressed.hash.finalize());
    let compressed = uncompressed.inner.finish().with_context(written)?;
    let digest = format!("{:x}", compressed.hash.finalize());
    let size = compressed.len;
    finish_file(Ok(compressed.inner), path)?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
    })
}

/// Flushes a finished tar's file to disk and returns its size.
fn finish_file(writer: io::Result<BufWriter<File>>, path: &Path) -> Result<u64> {
    let written = || format!("cannot write {}", path.display());
    let file = writer
        .with_context(written)?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(written)?;
    file.sync_all().with_context(written)?;
    Ok(file.metadata().with_context(written)?.len())
}

/// A writer that hashes and counts what goes through it.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W> HashWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A file next to the output, removed when dropped: after a failure, or after the rename
/// (when there is nothing left to remove).
struct Partial(PathBuf);

impl Partial {
    fn new(out: &Path, suffix: &str) -> Self {
        let mut path = out.as_os_str().to_owned();
        path.push(suffix);
        Self(PathBuf::from(path))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use serde_json::Value;

    const EPOCH: u64 = 1_700_000_000;

    /// Small stand-ins for the real binaries, so the tests are fast.
    fn spec() -> ImageSpec<'static> {
        ImageSpec {
            version: "0.1.0-test",
            source_date_epoch: EPOCH,
            revision: Some("0123456789abcdef"),
            aegird: Path::new("/bin/true"),
            aegir: Path::new("/bin/false"),
        }
    }

    /// (path, header, content) of every entry, in archive order.
    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::Header, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut all = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            all.push((path, header, data));
        }
        all
    }

    /// Checks what both tars promise: sorted, parents first, fixed times, numeric ids.
    fn check_tar_order_and_times(all: &[(String, tar::Header, Vec<u8>)]) {
        let paths: Vec<PathBuf> = all.iter().map(|(p, ..)| PathBuf::from(p)).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted, "entries sorted by path, no duplicates");
        for (path, header, _) in all {
            assert_eq!(header.mtime().unwrap(), EPOCH, "mtime of {path}");
            assert_eq!(header.username().unwrap(), Some(""), "user name of {path}");
            assert_eq!(
                header.groupname().unwrap(),
                Some(""),
                "group name of {path}"
            );
            let parent = Path::new(path).parent().unwrap();
            if !parent.as_os_str().is_empty() {
                let at = paths.iter().position(|p| p == Path::new(path)).unwrap();
                assert!(
                    paths[..at].iter().any(|p| p == parent),
                    "{path} comes after its parent"
                );
            }
        }
    }

    fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, desc: &Value) -> &'a [u8] {
        let digest = desc["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = &files[&format!("blobs/sha256/{hex}")];
        assert_eq!(sha256_hex(bytes), hex, "blob content matches its name");
        assert_eq!(desc["size"].as_u64().unwrap(), bytes.len() as u64);
        bytes
    }

    #[test]
    fn same_inputs_give_identical_archives() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let info_a = write_image(&a, &spec()).unwrap();
        let info_b = write_image(&b, &spec()).unwrap();
        assert_eq!(info_a, info_b);
        let (bytes_a, bytes_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert!(bytes_a == bytes_b, "the two archives differ");
        assert_eq!(info_a.size, bytes_a.len() as u64);
        // Nothing left behind but the two archives.
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["a.tar", "b.tar"]);
    }

    #[test]
    fn layout_digests_sizes_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("image.tar");
        let info = write_image(&out, &spec()).unwrap();
        let all = entries(&fs::read(&out).unwrap());
        check_tar_order_and_times(&all);
        for (path, header, _) in &all {
            assert_eq!(
                (header.uid().unwrap(), header.gid().unwrap()),
                (0, 0),
                "{path}"
            );
        }
        let files: BTreeMap<String, Vec<u8>> = all
            .into_iter()
            .filter(|(_, h, _)| h.entry_type().is_file())
            .map(|(p, _, d)| (p, d))
            .collect();

        let layout: Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        let m = &manifests[0];
        assert_eq!(m["mediaType"], MEDIA_MANIFEST);
        assert_eq!(m["digest"], info.digest.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "0.1.0-test"
        );

        let manifest: Value = serde_json::from_slice(blob(&files, m)).unwrap();
        assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], MEDIA_LAYER);
        let layer = blob(&files, &layers[0]);
        let mut tar = Vec::new();
        GzDecoder::new(layer).read_to_end(&mut tar).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            json!([format!("sha256:{}", sha256_hex(&tar))])
        );
        // Blobs: exactly the manifest, the config and the layer.
        assert_eq!(files.keys().filter(|k| k.starts_with("blobs/")).count(), 3);

        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let c = &config["config"];
        assert_eq!(c["User"], "10001:10001");
        assert_eq!(c["Entrypoint"], json!(["/usr/bin/aegird"]));
        assert_eq!(c["Cmd"], json!(["serve"]));
        assert!(c["Env"]
            .as_array()
            .unwrap()
            .contains(&json!("AEGIR_LISTEN=0.0.0.0:7270")));
        assert_eq!(c["ExposedPorts"], json!({ "7270/tcp": {} }));
        assert_eq!(c["Volumes"], json!({ "/var/lib/aegir": {} }));
        assert_eq!(c["WorkingDir"], "/var/lib/aegir");
        let labels = &c["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], "0.1.0-test");
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            "0123456789abcdef"
        );
        assert_eq!(
            labels["org.opencontainers.image.created"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(config["history"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn layer_is_sorted_with_fixed_times_owners_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layer.tar.gz");
        let tree = layer_tree(&spec()).unwrap();
        let layer = write_layer(&path, &tree, EPOCH).unwrap();
        let gz = fs::read(&path).unwrap();
        assert_eq!(sha256_hex(&gz), layer.digest);
        assert_eq!(gz.len() as u64, layer.size);
        // gzip header: magic, deflate, no flags (so no file name), mtime 0.
        assert_eq!(gz[..8], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);

        let mut tar = Vec::new();
        GzDecoder::new(gz.as_slice()).read_to_end(&mut tar).unwrap();
        assert_eq!(sha256_hex(&tar), layer.diff_id);
        let all = entries(&tar);
        check_tar_order_and_times(&all);
        let find = |p: &str| {
            all.iter()
                .find(|(path, ..)| path.trim_end_matches('/') == p)
                .unwrap_or_else(|| panic!("{p} missing from the layer"))
        };
        let mode_owner = |p: &str| {
            let (_, h, _) = find(p);
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap())
        };
        assert_eq!(mode_owner("var/lib/aegir"), (0o700, 10001, 10001));
        assert_eq!(mode_owner("tmp"), (0o1777, 0, 0));
        assert_eq!(mode_owner("usr/bin/aegird"), (0o755, 0, 0));
        assert_eq!(mode_owner("usr/bin/aegir"), (0o755, 0, 0));
        assert_eq!(mode_owner("etc/passwd"), (0o644, 0, 0));
        assert_eq!(find("usr/bin/aegird").2, fs::read("/bin/true").unwrap());
        assert_eq!(find("etc/group").2, GROUP.as_bytes());
        assert_eq!(find("etc/nsswitch.conf").2, NSSWITCH.as_bytes());
        assert!(find("etc/ssl/certs/ca-certificates.crt").2.len() > 1000);
        assert!(String::from_utf8_lossy(&find("etc/passwd").2)
            .contains("aegir:x:10001:10001:Aegir:/var/lib/aegir:/usr/sbin/nologin"));

        // The loader at its PT_INTERP path, and libc, as real files.
        let interp = elf_interpreter(Path::new("/bin/true")).unwrap().unwrap();
        let (_, h, data) = find(&interp[1..]);
        assert!(h.entry_type().is_file());
        assert_eq!(*data, fs::read(&interp).unwrap());
        assert!(all
            .iter()
            .any(|(p, h, _)| p.contains("/libc.so.6") && h.entry_type().is_file()));
        // Only directories and regular files: no symlink chains to resolve.
        assert!(all
            .iter()
            .all(|(_, h, _)| h.entry_type().is_file() || h.entry_type().is_dir()));
        // Directories end in `/`, as other tools write them.
        assert!(all.iter().any(|(p, ..)| p == "usr/bin/"));
    }

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn rejects_a_foreign_binary() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        fs::write(&script, format!("#!/bin/sh\n# {}\n", "-".repeat(100))).unwrap();
        let err = elf_interpreter(&script).unwrap_err();
        assert!(format!("{err:#}").contains("not an ELF"), "{err:#}");
    }
}
