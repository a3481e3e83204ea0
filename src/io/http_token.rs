//! The HTTP API's bearer token when none is configured: generated once from the OS RNG (256 bits, hex), kept in
//! `<state_dir>/http-token` (mode 0600, the directory 0700) and reused on later starts. The attendant page's link
//! (`http://<listener>/#token=<token>`) goes to `<state_dir>/attendant-link` (0600): parkd logs the paths of both
//! files, never the token itself.

use rand::RngCore;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file holding the generated token, inside the state directory.
pub const TOKEN_FILE: &str = "http-token";
/// The file holding the attendant page's link with the token, inside the state directory.
pub const LINK_FILE: &str = "attendant-link";

/// Why the state directory or a file in it could not be used (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {dir} ([server] state_dir / --state-dir): {source}")]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot write {file} in the state directory ([server] state_dir / --state-dir): {source}")]
    Write { file: PathBuf, source: std::io::Error },
    #[error("cannot read {file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file} does not hold a usable token (one line of printable characters); delete it to have a new one generated")]
    BadToken { file: PathBuf },
}

/// Where the token in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `[http] token` or `--http-token`.
    Configured,
    /// Generated at this start and written to this file.
    Generated(PathBuf),
    /// Read from this file (generated at an earlier start).
    Loaded(PathBuf),
}

/// The bearer token and where it came from.
#[derive(Clone, Debug)]
pub struct ApiToken {
    pub token: String,
    pub source: TokenSource,
}

/// The configured token, else the one kept in `state_dir` (generated there at first start).
pub fn resolve(configured: Option<&str>, state_dir: &Path) -> Result<ApiToken, StateError> {
    if let Some(t) = configured.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(ApiToken { token: t.to_string(), source: TokenSource::Configured });
    }
    ensure_state_dir(state_dir)?;
    let file = state_dir.join(TOKEN_FILE);
    match read_token(&file)? {
        Some(token) => Ok(ApiToken { token, source: TokenSource::Loaded(file) }),
        None => {
            let token = generate();
            match write_private(&file, &format!("{token}\n"), true) {
                Ok(()) => Ok(ApiToken { token, source: TokenSource::Generated(file) }),
                // Another parkd on the same directory won the race: use its token.
                Err(StateError::Write { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                    let token = read_token(&file)?.ok_or(StateError::BadToken { file: file.clone() })?;
                    Ok(ApiToken { token, source: TokenSource::Loaded(file) })
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Writes `http://<listener>/#token=<token>` to `<state_dir>/attendant-link` (0600) and returns its path. An
/// unspecified listener (`0.0.0.0`) is written as loopback.
pub fn write_attendant_link(state_dir: &Path, listener: SocketAddr, token: &str) -> Result<PathBuf, StateError> {
    ensure_state_dir(state_dir)?;
    let file = state_dir.join(LINK_FILE);
    let link = attendant_link(listener, token);
    write_private(&file, &format!("{link}\n"), false)?;
    Ok(file)
}

/// The page link for `listener` (loopback when it is unspecified) with `token` in the fragment.
pub fn attendant_link(listener: SocketAddr, token: &str) -> String {
    let mut addr = listener;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let token: String = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("http://{addr}/#token={token}")
}

/// 256 bits from the operating system's RNG, as 64 hex digits.
fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the state directory (and parents) mode 0700; warns when an existing one is open to others. Also what
/// the journal (`io::journal_file`) calls before it opens its files, so both report an unusable directory alike.
pub fn ensure_state_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| StateError::CreateDir { dir: dir.to_path_buf(), source })?;
    if let Ok(meta) = fs::metadata(dir) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = %format!("{:o}", meta.permissions().mode() & 0o777), "the state directory is open to other users; chmod 700 it");
        }
    }
    Ok(())
}

/// The token in `file`, `None` when the file does not exist. A file readable by others is made 0600.
fn read_token(file: &Path) -> Result<Option<String>, StateError> {
    let text = match fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { file: file.to_path_buf(), source }),
    };
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StateError::BadToken { file: file.to_path_buf() });
    }
    if let Ok(meta) = fs::metadata(file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "the token file was readable by others: made 0600");
            let _ = fs::set_permissions(file, fs::Permissions::from_mode(0o600));
        }
    }
    Ok(Some(token.to_string()))
}

/// Writes `text` to `file` with mode 0600 (`create_new`: fail if it exists; else replace it).
fn write_private(file: &Path, text: &str, create_new: bool) -> Result<(), StateError> {
    let err = |source| StateError::Write { file: file.to_path_buf(), source };
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    let mut f = opts.open(file).map_err(err)?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_token_is_generated_once_private_and_reused() {
        let tmp = tempdir();
        let dir = tmp.join("a/parkd-state");
        let first = resolve(None, &dir).unwrap();
        assert_eq!(first.source, TokenSource::Generated(dir.join(TOKEN_FILE)));
        assert_eq!(first.token.len(), 64, "256 bits in hex");
        assert!(first.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(TOKEN_FILE)), 0o600);
        let again = resolve(None, &dir).unwrap();
        assert_eq!((again.token.as_str(), again.source), (first.token.as_str(), TokenSource::Loaded(dir.join(TOKEN_FILE))));
        assert_ne!(resolve(None, &tmp.join("other")).unwrap().token, first.token, "random, not fixed");
        let configured = resolve(Some(" mine "), &tmp.join("unused")).unwrap();
        assert_eq!((configured.token.as_str(), configured.source), ("mine", TokenSource::Configured));
        assert!(!tmp.join("unused").exists(), "a configured token needs no state directory");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn the_link_file_is_private_and_names_the_listener() {
        let tmp = tempdir();
        let file = write_attendant_link(&tmp, "0.0.0.0:8080".parse().unwrap(), "ab+/").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "http://127.0.0.1:8080/#token=ab%2B%2F\n");
        assert_eq!(mode(&file), 0o600);
        write_attendant_link(&tmp, "[::1]:9000".parse().unwrap(), "t").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "http://[::1]:9000/#token=t\n", "rewritten at every start");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn unusable_state_is_a_clear_error_naming_the_path() {
        let tmp = tempdir();
        let blocker = tmp.join("file");
        fs::write(&blocker, "x").unwrap();
        let e = resolve(None, &blocker.join("state")).unwrap_err();
        assert!(e.to_string().contains(&blocker.join("state").display().to_string()), "{e}");
        let dir = tmp.join("bad");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(TOKEN_FILE), "  \n").unwrap();
        assert!(matches!(resolve(None, &dir), Err(StateError::BadToken { .. })));
        let _ = fs::remove_dir_all(&tmp);
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("parkd-token-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }
}
