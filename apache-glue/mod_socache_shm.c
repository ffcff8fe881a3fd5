/* mod_socache_shm: the "shm" socache provider for Apache httpd 2.4.
 *
 * This file only declares the module, registers the provider and offers
 * the Rust side a way into the error log. Every callback is implemented in
 * Rust (src/httpd/provider.rs), linked in from the crate's static library.
 *
 * Flags 0: the cache does its own cross-process and cross-thread locking,
 * so consumers (mod_ssl, ...) do not wrap it in their global mutex.
 *
 * Session tickets (tickets= on the SSLSessionCache line): registered on
 * mod_ssl's optional hook init_server, forwarded to Rust
 * (src/httpd/ticket_hook.rs), which sets each context's ticket-key
 * callback. */

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "mpm_common.h"
#include "ap_provider.h"
#include "ap_socache.h"
#include "apr_optional_hooks.h"
#include "mod_ssl.h"            /* SSL_DECLARE */

#include <openssl/ssl.h>

#include "socache_shm_rust.h"

/* mod_ssl's optional hook, as httpd's modules/ssl/mod_ssl_openssl.h
 * declares it: Debian's apache2-dev does not ship that header (its
 * mod_ssl.so does run the hook), so the prototype is declared here.
 * mod_ssl runs it in the parent, after it has set up every context
 * (ticket keys included), before the children fork. */
APR_DECLARE_EXTERNAL_HOOK(ssl, SSL, int, init_server,
                          (server_rec *s, apr_pool_t *p, int is_proxy,
                           SSL_CTX *ctx))

static void register_hooks(apr_pool_t *p);

/* Also does APLOG_USE_MODULE(socache_shm) for the log helpers below. */
AP_DECLARE_MODULE(socache_shm) = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* per-directory config creator */
    NULL,                       /* dir config merger */
    NULL,                       /* server config creator */
    NULL,                       /* server config merger */
    NULL,                       /* command table */
    register_hooks
};

static const ap_socache_provider_t socache_shm_provider = {
    "shm",
    0,
    socache_shm_create,
    socache_shm_init,
    socache_shm_destroy,
    socache_shm_store,
    socache_shm_retrieve,
    socache_shm_remove,
    socache_shm_status,
    socache_shm_iterate
};

void socache_shm_log(const server_rec *s, int level, apr_status_t status,
                     const char *msg)
{
    ap_log_error(APLOG_MARK, level, status, s, "%s", msg);
}

int socache_shm_log_enabled(const server_rec *s, int level)
{
    return APLOG_IS_LEVEL(s, level);
}

static void register_hooks(apr_pool_t *p)
{
    ap_register_provider(p, AP_SOCACHE_PROVIDER_GROUP, "shm",
                         AP_SOCACHE_PROVIDER_VERSION,
                         &socache_shm_provider);
    /* Children drop the segments' descriptors (they keep the mappings);
     * the parent zeroes expired entries about every 10 s. */
    ap_hook_child_init(socache_shm_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_monitor(socache_shm_monitor, NULL, NULL, APR_HOOK_MIDDLE);
    /* Without mod_ssl loaded, the hook is never run. */
    APR_OPTIONAL_HOOK(ssl, init_server, socache_shm_ssl_init_server,
                      NULL, NULL, APR_HOOK_MIDDLE);
}
