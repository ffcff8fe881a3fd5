/* The Rust side of mod_socache_shm (src/httpd/provider.rs), as seen from
 * the C glue. Every function is a socache provider callback of
 * ap_socache.h; all of them catch Rust panics and return an error instead.
 * The Rust side calls back into socache_shm_log* below (defined in
 * mod_socache_shm.c). */

#ifndef SOCACHE_SHM_RUST_H
#define SOCACHE_SHM_RUST_H

#include "httpd.h"
#include "ap_socache.h"

const char *socache_shm_create(ap_socache_instance_t **instance,
                               const char *arg,
                               apr_pool_t *tmp, apr_pool_t *p);
apr_status_t socache_shm_init(ap_socache_instance_t *instance,
                              const char *cname,
                              const struct ap_socache_hints *hints,
                              server_rec *s, apr_pool_t *pool);
void socache_shm_destroy(ap_socache_instance_t *instance, server_rec *s);
apr_status_t socache_shm_store(ap_socache_instance_t *instance, server_rec *s,
                               const unsigned char *id, unsigned int idlen,
                               apr_time_t expiry,
                               unsigned char *data, unsigned int datalen,
                               apr_pool_t *pool);
apr_status_t socache_shm_retrieve(ap_socache_instance_t *instance,
                                  server_rec *s,
                                  const unsigned char *id, unsigned int idlen,
                                  unsigned char *data, unsigned int *datalen,
                                  apr_pool_t *pool);
apr_status_t socache_shm_remove(ap_socache_instance_t *instance, server_rec *s,
                                const unsigned char *id, unsigned int idlen,
                                apr_pool_t *pool);
void socache_shm_status(ap_socache_instance_t *instance, request_rec *r,
                        int flags);
apr_status_t socache_shm_iterate(ap_socache_instance_t *instance,
                                 server_rec *s, void *userctx,
                                 ap_socache_iterator_t *iterator,
                                 apr_pool_t *pool);

/* Hooks (src/httpd/provider.rs): a new child drops the segments'
 * descriptors; the parent's monitor hook zeroes expired entries. */
void socache_shm_child_init(apr_pool_t *pchild, server_rec *s);
int socache_shm_monitor(apr_pool_t *p, server_rec *s);

/* mod_ssl's init_server hook (src/httpd/ticket_hook.rs): with tickets=,
 * install the session-ticket key callback on ctx. ctx is an SSL_CTX *
 * (declared as its struct so this header needs no OpenSSL header). */
struct ssl_ctx_st;
int socache_shm_ssl_init_server(server_rec *s, apr_pool_t *p, int is_proxy,
                                struct ssl_ctx_st *ctx);

/* Called from Rust: log a preformatted message with this module's log
 * index (so "LogLevel socache_shm:debug" applies), and ask whether a
 * level is enabled before formatting. s may be NULL. */
__attribute__((visibility("hidden")))
void socache_shm_log(const server_rec *s, int level, apr_status_t status,
                     const char *msg);
__attribute__((visibility("hidden")))
int socache_shm_log_enabled(const server_rec *s, int level);

#endif
