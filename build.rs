//! Build script: with feature `httpd` (the default), one bindgen run over the
//! installed httpd and APR headers, written to `$OUT_DIR/httpd_bindings.rs`
//! and included by `src/httpd/bindings.rs`. Without the feature it does
//! nothing, so the engine builds on machines without apache2-dev/libclang.
//!
//! Header discovery, in order:
//! - `$APXS` (or `apxs`, then `apxs2`) `-q INCLUDEDIR` for httpd's headers,
//!   `-q EXTRA_CPPFLAGS` for the defines httpd modules are compiled with;
//! - `apr-1-config --includes` (APR and APR-util share a directory on
//!   Debian; on RHEL `apxs -q APR_INCLUDEDIR` is asked too);
//! - fallbacks `/usr/include/apache2` and `/usr/include/apr-1.0`
//!   (Debian/Ubuntu), `/usr/include/httpd` and `/usr/include/apr-1` (RHEL).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "httpd")]
    httpd::bindings();
}

/// Feature `httpd` only: bindgen is an optional build-dependency.
#[cfg(feature = "httpd")]
mod httpd {
    use std::env;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Generate `$OUT_DIR/httpd_bindings.rs`.
    pub(crate) fn bindings() {
        println!("cargo:rerun-if-env-changed=APXS");
        println!("cargo:rerun-if-env-changed=APR_CONFIG");

        let headers = Headers::locate();
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        generate(&headers, &out.join("httpd_bindings.rs"));
    }

    /// Where the headers are and how httpd compiles against them.
    struct Headers {
        include_dirs: Vec<PathBuf>,
        defines: Vec<String>,
    }

    impl Headers {
        fn locate() -> Headers {
            let apxs = env::var("APXS").ok().filter(|s| !s.is_empty());
            let apxs_candidates: Vec<String> = match apxs {
                Some(a) => vec![a],
                None => vec!["apxs".into(), "apxs2".into()],
            };

            let mut include_dirs = Vec::new();
            let mut defines = Vec::new();
            for apxs in &apxs_candidates {
                if let Some(dir) = query(apxs, &["-q", "INCLUDEDIR"]) {
                    include_dirs.push(PathBuf::from(dir));
                    if let Some(dir) = query(apxs, &["-q", "APR_INCLUDEDIR"]) {
                        include_dirs.push(PathBuf::from(dir));
                    }
                    if let Some(flags) = query(apxs, &["-q", "EXTRA_CPPFLAGS"]) {
                        defines.extend(
                            flags
                                .split_whitespace()
                                .filter(|f| f.starts_with("-D"))
                                .map(String::from),
                        );
                    }
                    break;
                }
            }

            let apr_config = env::var("APR_CONFIG").unwrap_or_else(|_| "apr-1-config".into());
            if let Some(flags) = query(&apr_config, &["--includes"]) {
                include_dirs.extend(
                    flags
                        .split_whitespace()
                        .filter_map(|f| f.strip_prefix("-I"))
                        .map(PathBuf::from),
                );
            }

            for fallback in [
                "/usr/include/apache2",
                "/usr/include/httpd",
                "/usr/include/apr-1.0",
                "/usr/include/apr-1",
            ] {
                let p = PathBuf::from(fallback);
                if p.is_dir() {
                    include_dirs.push(p);
                }
            }
            include_dirs.retain(|d| d.is_dir());
            dedup_keep_order(&mut include_dirs);

            let has = |name: &str| include_dirs.iter().any(|d| d.join(name).is_file());
            if !has("ap_socache.h") || !has("apr_pools.h") {
                panic!(
                    "mod_socache_shm: the httpd and APR headers were not found (looked in {:?}).\n\
                     Install them (Debian/Ubuntu: apt-get install apache2-dev; RHEL: dnf install httpd-devel),\n\
                     set APXS=/path/to/apxs, or build the engine alone with --no-default-features.",
                    include_dirs
                );
            }
            if defines.is_empty() {
                defines = vec![
                    "-DLINUX".into(),
                    "-D_REENTRANT".into(),
                    "-D_GNU_SOURCE".into(),
                ];
            }
            for d in &include_dirs {
                println!(
                    "cargo:rerun-if-changed={}",
                    d.join("ap_socache.h").display()
                );
            }
            Headers {
                include_dirs,
                defines,
            }
        }
    }

    /// Run `prog args`, returning trimmed stdout when it succeeded and printed something.
    fn query(prog: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(prog).args(args).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    fn dedup_keep_order(v: &mut Vec<PathBuf>) {
        let mut seen: Vec<PathBuf> = Vec::new();
        v.retain(|p| {
            let key = p.canonicalize().unwrap_or_else(|_| p.clone());
            if seen.contains(&key) {
                false
            } else {
                seen.push(key);
                true
            }
        });
    }

    /// The headers the FFI layer needs, in the order a module includes them.
    const WRAPPER: &str = r#"
    #include <httpd.h>
    #include <http_config.h>
    #include <http_core.h>
    #include <http_log.h>
    #include <http_main.h>
    #include <http_protocol.h>
    #include <ap_mpm.h>
    #include <ap_socache.h>
    #include <mod_status.h>
    #include <unixd.h>
    #include <apr_pools.h>
    #include <apr_errno.h>
    #include <apr_strings.h>
    "#;

    fn generate(headers: &Headers, out: &Path) {
        let mut builder = bindgen::Builder::default()
            .header_contents("socache_shm_wrapper.h", WRAPPER)
            .clang_args(
                headers
                    .include_dirs
                    .iter()
                    .map(|d| format!("-I{}", d.display())),
            )
            .clang_args(&headers.defines)
            // Types: what the provider callbacks receive and touch. Everything these
            // reach is pulled in (recursively), generated from the real headers.
            .allowlist_type("ap_socache_provider_t")
            .allowlist_type("ap_socache_instance_t")
            .allowlist_type("ap_socache_hints")
            .allowlist_type("ap_socache_iterator_t")
            .allowlist_type("server_rec")
            .allowlist_type("request_rec")
            .allowlist_type("process_rec")
            .allowlist_type("apr_pool_t")
            .allowlist_type("apr_status_t")
            .allowlist_type("apr_time_t")
            .allowlist_type("apr_size_t")
            // The configuration tree (`tickets=` checks at `apachectl -t`).
            .allowlist_type("ap_directive_t")
            .allowlist_var("ap_conftree")
            // Functions.
            .allowlist_function("ap_rwrite")
            .allowlist_function("ap_server_root_relative")
            .allowlist_function("ap_state_query")
            // Threaded MPM or prefork: how many farm-tier connections a child keeps.
            .allowlist_function("ap_mpm_query")
            .allowlist_var("AP_MPMQ_IS_THREADED")
            .allowlist_var("AP_MPMQ_NOT_SUPPORTED")
            .allowlist_var("AP_MPMQ_MAX_THREADS")
            .allowlist_function("apr_pool_userdata_get")
            .allowlist_function("apr_pool_userdata_setn")
            .allowlist_function("apr_pool_cleanup_register")
            .allowlist_function("apr_pool_cleanup_null")
            .allowlist_function("apr_palloc")
            .allowlist_function("apr_pstrdup")
            .allowlist_function("apr_pstrmemdup")
            // Constants.
            .allowlist_var("ap_pglobal")
            .allowlist_var("AP_STATUS_SHORT")
            .allowlist_var("AP_SQ_MAIN_STATE")
            .allowlist_var("AP_SQ_MS_.*")
            .allowlist_var("AP_SQ_RUN_MODE")
            .allowlist_var("AP_SQ_RM_.*")
            .allowlist_var("APLOG_(EMERG|ALERT|CRIT|ERR|WARNING|NOTICE|INFO|DEBUG|TRACE[1-8])")
            .allowlist_var("APR_SUCCESS")
            .allowlist_var("APR_NOTFOUND")
            .allowlist_var("APR_ENOSPC")
            .allowlist_var("APR_EINVAL")
            .allowlist_var("APR_ENOMEM")
            .allowlist_var("APR_EGENERAL")
            .allowlist_var("APR_EINIT")
            .derive_default(false)
            .derive_debug(false)
            .layout_tests(true)
            .generate_comments(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        // Plain integer constants rather than per-macro types.
        builder = builder.default_macro_constant_type(bindgen::MacroTypeVariation::Signed);
        let bindings = builder.generate().unwrap_or_else(|e| {
            panic!("mod_socache_shm: bindgen over the httpd headers failed: {e}")
        });
        bindings
            .write_to_file(out)
            .unwrap_or_else(|e| panic!("mod_socache_shm: writing {}: {e}", out.display()));
    }
}
