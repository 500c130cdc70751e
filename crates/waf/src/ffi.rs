//! The unsafe boundary: every call into libmodsecurity lives in this module.
//!
//! Ownership and threading model (libmodsecurity 3.0.9):
//!
//! * One process-wide `ModSecurity` engine, created once and never freed. Its destructor calls
//!   `xmlCleanupParser()` and `curl_global_cleanup()`, which must not run while any other
//!   engine or transaction may still use libxml2 or curl, so a per-config engine would be
//!   unsound across reloads. The engine holds the log callback (set once, before any
//!   transaction) and the persistent collections (GLOBAL, IP, …).
//! * A [`RuleSet`] owns one `RulesSet`. It is mutated only while it is built (`add`,
//!   `add_file`, both `&mut self`); afterwards transactions only read it. libmodsecurity
//!   supports evaluating one loaded rule set from many threads (each transaction on one
//!   thread), so `RuleSet` is `Send + Sync`.
//! * A [`Transaction`] borrows its rule set, is used by one thread and freed on drop. It is
//!   neither `Send` nor `Sync` (it holds raw pointers), so it cannot leave the thread that
//!   runs it.
//!   Response inspection does not keep a request's transaction alive until the response
//!   arrives (that would need it to be `Send` and freed on every path, including a client
//!   that goes away): it starts a second transaction on the blocking thread that inspects the
//!   response, and replays the request's URI and headers into it first.
//! * The log callback gets the transaction's `logCbData` pointer: a heap-allocated
//!   [`Matches`] owned by the [`Transaction`], written only from inside the library's calls
//!   on that transaction's thread, read only between calls.
//!
//! One caveat of 3.0.9 (fixed in 3.0.13): reads of persistent collections take no lock, so
//! rules that *write* them (`setvar:ip.…`) race with concurrent transactions. The CRS as
//! configured here writes none; custom rules that do are detected by the safe layer, which
//! then serialises their transactions.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, MutexGuard, OnceLock};

use modsecurity_sys as sys;

extern "C" {
    /// The C library's `free`: libmodsecurity hands out `strdup`/`malloc` buffers (parser
    /// errors, intervention log and URL) that the caller must release with it.
    fn free(ptr: *mut c_void);
}

/// libmodsecurity's SecLang parser (bison/flex) keeps global state: two rule sets loaded at
/// once corrupt each other's parse. Every load holds this lock.
fn parser_lock() -> MutexGuard<'static, ()> {
    static PARSER: Mutex<()> = Mutex::new(());
    PARSER.lock().unwrap_or_else(|p| p.into_inner())
}

/// The process-wide engine pointer, and its version string (read once, at creation).
struct Engine(NonNull<sys::ModSecurity>, String);

// SAFETY: the engine is created and configured (connector info, log callback) once inside
// `OnceLock::get_or_init`, before the pointer is published; afterwards it is only passed to
// `msc_new_transaction`, which reads it. Its mutable state (persistent collections) is
// internally locked for writes; see the module docs for the read caveat and how it is handled.
unsafe impl Send for Engine {}
// SAFETY: as above: shared use is read-only after initialisation.
unsafe impl Sync for Engine {}

fn engine_init() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    let e = ENGINE.get_or_init(|| {
        // SAFETY: msc_init has no preconditions; it returns a new engine or null.
        let raw = unsafe { sys::msc_init() };
        let e = NonNull::new(raw)?;
        let connector = c"portcullis";
        // SAFETY: `e` is a live engine, `connector` is a NUL-terminated string the library
        // copies. No transaction exists yet, so nothing reads the engine concurrently.
        unsafe { sys::msc_set_connector_info(e.as_ptr(), connector.as_ptr()) };
        // SAFETY: as above; `log_callback` matches `ModSecLogCb` and is valid forever.
        unsafe { sys::msc_set_log_cb(e.as_ptr(), Some(log_callback)) };
        // SAFETY: live engine, not yet shared. `msc_who_am_i` rewrites a member string and
        // returns its `c_str()`, so it is called here only, before publication; the text is
        // copied at once.
        let p = unsafe { sys::msc_who_am_i(e.as_ptr()) };
        let version = if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated, owned by the engine (never freed); copied.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        Some(Engine(e, version))
    });
    e.as_ref()
}

fn engine() -> Result<NonNull<sys::ModSecurity>, String> {
    engine_init()
        .map(|e| e.0)
        .ok_or_else(|| "msc_init failed".to_string())
}

/// Rule ids and messages collected from the log callback for one transaction.
#[derive(Debug, Default)]
pub(crate) struct Matches {
    pub(crate) lines: Vec<String>,
}

/// Receives each rule match of a transaction as text (`TextLogProperty`).
unsafe extern "C" fn log_callback(data: *mut c_void, msg: *const c_void) {
    if data.is_null() || msg.is_null() {
        return;
    }
    // SAFETY: `data` is the `logCbData` given to `msc_new_transaction`: a `*mut Matches` from
    // `Box::into_raw`, owned by the `Transaction` and freed only after the transaction was
    // cleaned up. The callback runs synchronously inside an `msc_*` call on the
    // transaction's own thread, while no Rust reference to the `Matches` exists.
    let matches = unsafe { &mut *data.cast::<Matches>() };
    // SAFETY: with `TextLogProperty` (the default of `msc_set_log_cb`) `msg` is the
    // NUL-terminated `c_str()` of a `std::string` that lives for the duration of the call.
    let text = unsafe { CStr::from_ptr(msg.cast::<c_char>()) };
    // Bounded: a hostile request cannot make us keep an unbounded number of lines.
    if matches.lines.len() < 1024 {
        matches
            .lines
            .push(String::from_utf8_lossy(text.to_bytes()).into_owned());
    }
}

/// Takes ownership of a library-allocated C string: copies it and frees the original.
fn take_c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is non-null and points to a NUL-terminated string allocated by the library
    // (strdup), which we own and have not freed.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: the string was allocated with malloc by the library (same C runtime) and is
    // freed exactly once, here; `s` is an owned copy.
    unsafe { free(p.cast_mut().cast::<c_void>()) };
    Some(s)
}

/// An owned, loaded ModSecurity rule set.
pub(crate) struct RuleSet {
    ptr: NonNull<sys::RulesSet>,
}

// SAFETY: a `RulesSet` is only mutated through `&mut self` methods (loading); transactions
// read it through `&self`. Moving it to another thread moves only the pointer.
unsafe impl Send for RuleSet {}
// SAFETY: after loading, libmodsecurity treats the rules set as read-only while evaluating
// transactions; concurrent evaluation of one rules set by several threads (one transaction
// each) is the library's supported multi-threaded model.
unsafe impl Sync for RuleSet {}

impl RuleSet {
    pub(crate) fn new() -> Result<RuleSet, String> {
        // The engine must exist (and own the log callback) before any rules set is used.
        engine()?;
        // SAFETY: no preconditions; returns a new empty rules set or null.
        let raw = unsafe { sys::msc_create_rules_set() };
        NonNull::new(raw)
            .map(|ptr| RuleSet { ptr })
            .ok_or_else(|| "msc_create_rules_set failed".to_string())
    }

    /// Parses SecLang text into the set. Returns the number of rules added.
    pub(crate) fn add(&mut self, text: &str) -> Result<usize, String> {
        let c = CString::new(text).map_err(|_| "rule text contains a NUL byte".to_string())?;
        let mut err: *const c_char = ptr::null();
        let _parser = parser_lock();
        // SAFETY: `self.ptr` is a live rules set we own exclusively (`&mut self`); `c` is a
        // NUL-terminated string valid for the call; `err` is a valid out-pointer; the parser
        // lock is held.
        let n = unsafe { sys::msc_rules_add(self.ptr.as_ptr(), c.as_ptr(), &mut err) };
        Self::result(n, err)
    }

    /// Parses a SecLang file (relative `@pmFromFile` paths resolve from its directory).
    pub(crate) fn add_file(&mut self, path: &str) -> Result<usize, String> {
        let c = CString::new(path).map_err(|_| "path contains a NUL byte".to_string())?;
        let mut err: *const c_char = ptr::null();
        let _parser = parser_lock();
        // SAFETY: as in `add`.
        let n = unsafe { sys::msc_rules_add_file(self.ptr.as_ptr(), c.as_ptr(), &mut err) };
        Self::result(n, err)
    }

    fn result(n: c_int, err: *const c_char) -> Result<usize, String> {
        let msg = take_c_string(err);
        if n < 0 {
            Err(msg.unwrap_or_else(|| "rules could not be loaded".to_string()))
        } else {
            Ok(n as usize)
        }
    }

    /// Starts a transaction against this rule set.
    pub(crate) fn transaction(&self) -> Result<Transaction<'_>, String> {
        let engine = engine()?;
        let matches = Box::into_raw(Box::<Matches>::default());
        // SAFETY: `engine` and `self.ptr` are live (the engine forever, the rules set for the
        // borrow `'_` the transaction carries); `matches` is a valid heap pointer that the
        // returned `Transaction` owns and frees only after `msc_transaction_cleanup`.
        let raw =
            unsafe { sys::msc_new_transaction(engine.as_ptr(), self.ptr.as_ptr(), matches.cast()) };
        match NonNull::new(raw) {
            Some(tx) => Ok(Transaction {
                tx,
                matches,
                _rules: PhantomData,
            }),
            None => {
                // SAFETY: `matches` came from `Box::into_raw` above and was never shared.
                drop(unsafe { Box::from_raw(matches) });
                Err("msc_new_transaction failed".to_string())
            }
        }
    }
}

impl Drop for RuleSet {
    fn drop(&mut self) {
        // SAFETY: we own the rules set; every `Transaction` borrows `self`, so none is alive.
        unsafe { sys::msc_rules_cleanup(self.ptr.as_ptr()) };
    }
}

/// One request's evaluation. Not `Send`/`Sync`: used on the thread that created it.
pub(crate) struct Transaction<'r> {
    tx: NonNull<sys::Transaction>,
    matches: *mut Matches,
    _rules: PhantomData<&'r RuleSet>,
}

/// A disruptive action decided by the rules.
pub(crate) struct Intervention {
    pub(crate) status: u16,
    /// The disruptive rule's log line (`[id "949110"] [msg "…"]`); it may quote the request,
    /// so it is parsed, never shown to clients.
    pub(crate) log: Option<String>,
}

impl Transaction<'_> {
    pub(crate) fn connection(
        &mut self,
        client: &str,
        client_port: u16,
        server: &str,
        server_port: u16,
    ) -> Result<(), String> {
        let c = CString::new(client).map_err(|_| "NUL in address".to_string())?;
        let s = CString::new(server).map_err(|_| "NUL in address".to_string())?;
        // SAFETY: live transaction used on its own thread (`&mut self`); both strings are
        // NUL-terminated and copied by the library.
        unsafe {
            sys::msc_process_connection(
                self.tx.as_ptr(),
                c.as_ptr(),
                c_int::from(client_port),
                s.as_ptr(),
                c_int::from(server_port),
            )
        };
        Ok(())
    }

    pub(crate) fn uri(&mut self, uri: &str, method: &str, version: &str) -> Result<(), String> {
        let u = CString::new(uri).map_err(|_| "NUL in request target".to_string())?;
        let m = CString::new(method).map_err(|_| "NUL in method".to_string())?;
        let v = CString::new(version).map_err(|_| "NUL in version".to_string())?;
        // SAFETY: live transaction, `&mut self`; NUL-terminated strings copied by the library.
        unsafe { sys::msc_process_uri(self.tx.as_ptr(), u.as_ptr(), m.as_ptr(), v.as_ptr()) };
        Ok(())
    }

    pub(crate) fn header(&mut self, name: &[u8], value: &[u8]) {
        // SAFETY: live transaction, `&mut self`; pointer/length pairs describe valid slices
        // for the call; the library copies them into std::strings.
        unsafe {
            sys::msc_add_n_request_header(
                self.tx.as_ptr(),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
    }

    pub(crate) fn process_headers(&mut self) {
        // SAFETY: live transaction, `&mut self`.
        unsafe { sys::msc_process_request_headers(self.tx.as_ptr()) };
    }

    pub(crate) fn body(&mut self, body: &[u8]) {
        // SAFETY: live transaction, `&mut self`; a valid slice for the call, copied.
        unsafe { sys::msc_append_request_body(self.tx.as_ptr(), body.as_ptr(), body.len()) };
    }

    pub(crate) fn process_body(&mut self) {
        // SAFETY: live transaction, `&mut self`.
        unsafe { sys::msc_process_request_body(self.tx.as_ptr()) };
    }

    pub(crate) fn response_header(&mut self, name: &[u8], value: &[u8]) {
        // SAFETY: live transaction, `&mut self`; pointer/length pairs describe valid slices
        // for the call; the library copies them into std::strings.
        unsafe {
            sys::msc_add_n_response_header(
                self.tx.as_ptr(),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
    }

    /// Phase 3. `protocol` is the response's protocol, e.g. `HTTP/1.1`.
    pub(crate) fn process_response_headers(
        &mut self,
        status: u16,
        protocol: &str,
    ) -> Result<(), String> {
        let p = CString::new(protocol).map_err(|_| "NUL in protocol".to_string())?;
        // SAFETY: live transaction, `&mut self`; `p` is NUL-terminated and copied by the
        // library (into the RESPONSE_PROTOCOL variable) during the call.
        unsafe {
            sys::msc_process_response_headers(self.tx.as_ptr(), c_int::from(status), p.as_ptr())
        };
        Ok(())
    }

    pub(crate) fn response_body(&mut self, body: &[u8]) {
        // SAFETY: live transaction, `&mut self`; a valid slice for the call, copied (up to
        // the rule set's SecResponseBodyLimit).
        unsafe { sys::msc_append_response_body(self.tx.as_ptr(), body.as_ptr(), body.len()) };
    }

    /// Phase 4 (runs only when the rule set has `SecResponseBodyAccess On` and the response's
    /// Content-Type is one of its `SecResponseBodyMimeType`s).
    pub(crate) fn process_response_body(&mut self) {
        // SAFETY: live transaction, `&mut self`.
        unsafe { sys::msc_process_response_body(self.tx.as_ptr()) };
    }

    /// Forgets the log lines collected so far (a replayed request phase's matches).
    pub(crate) fn clear_matches(&mut self) {
        // SAFETY: `self.matches` is valid until drop; the library writes it only inside
        // `msc_*` calls, which need `&mut self`, so none runs during this exclusive access,
        // and no shared borrow from `matches()` can be alive while `&mut self` is.
        unsafe { (*self.matches).lines.clear() };
    }

    pub(crate) fn process_logging(&mut self) {
        // SAFETY: live transaction, `&mut self`.
        unsafe { sys::msc_process_logging(self.tx.as_ptr()) };
    }

    /// The pending disruptive action, if any (the library resets it once read).
    pub(crate) fn intervention(&mut self) -> Option<Intervention> {
        let mut it = sys::ModSecurityIntervention {
            status: 200,
            pause: 0,
            url: ptr::null_mut(),
            log: ptr::null_mut(),
            disruptive: 0,
        };
        // SAFETY: live transaction, `&mut self`; `it` is a valid, initialised struct with the
        // C layout (bindgen) whose `url`/`log` the library may fill with malloc'd strings.
        let disruptive = unsafe { sys::msc_intervention(self.tx.as_ptr(), &mut it) };
        // Copy and free what the library allocated.
        drop(take_c_string(it.url));
        let log = take_c_string(it.log);
        (disruptive != 0 || it.disruptive != 0).then(|| Intervention {
            status: u16::try_from(it.status).unwrap_or(403),
            log,
        })
    }

    /// The log lines collected so far.
    pub(crate) fn matches(&self) -> &Matches {
        // SAFETY: `self.matches` is valid until drop; the library writes it only inside
        // `msc_*` calls, which need `&mut self`, so none runs while this borrow lives.
        unsafe { &*self.matches }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the transaction; after cleanup the library no longer holds
        // `matches`, so it can be freed.
        unsafe { sys::msc_transaction_cleanup(self.tx.as_ptr()) };
        // SAFETY: `matches` came from `Box::into_raw` in `RuleSet::transaction` and is freed
        // exactly once, here, after the only other user (the transaction) is gone.
        drop(unsafe { Box::from_raw(self.matches) });
    }
}

/// The library's version string, e.g. `ModSecurity v3.0.9 (Linux)`.
pub(crate) fn version() -> Result<String, String> {
    engine_init()
        .map(|e| e.1.clone())
        .ok_or_else(|| "msc_init failed".to_string())
}
